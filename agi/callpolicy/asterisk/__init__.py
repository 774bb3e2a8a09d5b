"""The Asterisk contract: AGI wire format and channel variables, FastAGI server, AMI, dialplan."""
