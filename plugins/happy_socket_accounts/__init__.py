"""Accounts: Ed25519 login, device and terminal linking, profile and settings (work in progress)."""
