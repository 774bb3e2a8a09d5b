"""callpolicy: the policy brain of a Belgian VoIP operator's PBX."""
