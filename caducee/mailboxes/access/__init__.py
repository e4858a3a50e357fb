"""Who may see and write what: the patient's known professionals, médecin traitant, emergency
access and representatives (F1–F3), and the patient's correspondents (C4, D2, D3).

The rules themselves are pure tables in :mod:`caducee.policies.access`; this package gathers
the facts they are judged on and stores the patient's choices.
"""
