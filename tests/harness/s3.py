"""A real S3 API server for the tests: moto in server mode, a subprocess on 127.0.0.1 (K2).

The gateway talks to it over HTTP exactly as to any S3-compatible store; no
in-process mock is involved. One server per test session (see :func:`s3_server`);
each test takes a bucket of its own (:meth:`MotoServer.new_bucket`).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from caducee.storage.blob_backends import S3Backend, S3Options
from tests.harness.served import free_port
from tests.harness.waiting import wait_until

ACCESS_KEY_ID = "caducee-test"
SECRET_ACCESS_KEY = "caducee-test-secret"


@dataclass
class MotoServer:
    """A running moto server and a client of it."""

    endpoint_url: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"caducee-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def backend(self, bucket: str, **options: Any) -> S3Backend:
        return S3Backend(
            S3Options(
                bucket=bucket,
                endpoint_url=self.endpoint_url,
                access_key_id=ACCESS_KEY_ID,
                secret_access_key=SECRET_ACCESS_KEY,
                addressing_style="path",
                max_attempts=3,
                **options,
            )
        )

    def env(self, bucket: str) -> dict[str, str]:
        """``CADUCEE_`` variables (and credentials) that put a home's blobs in ``bucket``."""
        return {
            "CADUCEE_BLOBS__BACKEND": "s3",
            "CADUCEE_BLOBS__ENDPOINT_URL": self.endpoint_url,
            "CADUCEE_BLOBS__BUCKET": bucket,
            "CADUCEE_BLOBS__ADDRESSING_STYLE": "path",
            "CADUCEE_BLOBS__ACCESS_KEY_ID_ENV": "CADUCEE_TEST_S3_KEY_ID",
            "CADUCEE_BLOBS__SECRET_ACCESS_KEY_ENV": "CADUCEE_TEST_S3_SECRET",
            "CADUCEE_TEST_S3_KEY_ID": ACCESS_KEY_ID,
            "CADUCEE_TEST_S3_SECRET": SECRET_ACCESS_KEY,
        }


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


def start_moto(log_folder: Path) -> Iterator[MotoServer]:
    """Run ``python -m moto.server`` on a free loopback port until the generator closes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (log_folder / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: process.poll() is not None or _answers(url), timeout=60)
        assert process.poll() is None, (log_folder / "moto.log").read_text(errors="replace")
        yield MotoServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
