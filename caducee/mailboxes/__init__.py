"""Accounts, mailboxes, messages, conversations, flags, UIDs and delivery."""
