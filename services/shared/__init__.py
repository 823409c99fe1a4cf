"""Plumbing shared by every service: settings, logging, errors, gRPC, object store."""
