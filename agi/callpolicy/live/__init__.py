"""Live calls: the live-call table, revocation through AMI, call records and their writing."""
