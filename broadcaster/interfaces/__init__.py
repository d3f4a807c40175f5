"""The ways in: the HTTP API (``api``) and the command line (``cli``), both through broadcaster.service."""
