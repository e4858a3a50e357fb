"""Who may sign in: accounts, credentials, the identity service and a patient space's life.

``store`` holds the account tables and lookups; ``passwords`` and ``certificates`` the
credentials; ``delegation`` who may send as whom (C2); ``identity`` the one sign-in service
every door uses; ``lifecycle`` a patient space from enrolment to deletion (I1–I3) and
``dormant`` the idle professional mailboxes (I4).
"""
