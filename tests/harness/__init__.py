"""The one test harness: a served demo home, its clients, seeded identities, waiting.

Every test folder takes what it needs from here instead of carrying its own copy:

- :mod:`tests.harness.paths`: the repository, its sample corpus (``tests/samples``) and the
  commands a user runs;
- :mod:`tests.harness.waiting`: :func:`wait_until`, the only way a test waits;
- :mod:`tests.harness.identities`: valid INS numbers and patient spaces made in a database;
- :mod:`tests.harness.served`: ``caducee init --demo`` + ``caducee serve`` on free ports, with
  SMTP, submission, IMAP and HTTP clients;
- :mod:`tests.harness.fixtures`: the pytest fixtures over them (a plugin loaded by
  ``tests/conftest.py``).
"""
