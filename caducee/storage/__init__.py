"""Storage: the database engine and sessions, migrations, blobs, encryption, the job queue."""
