"""Generated from proto/frameseek/v1 by `make proto`; do not edit."""
