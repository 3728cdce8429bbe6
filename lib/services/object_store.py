"""The embedded S3 lake: SeaweedFS `weed mini` on loopback, locked down by lib/services/seaweed.py so that
only the S3 gateway, with its keys, reaches an object."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from lib.services import seaweed
from lib.services.service import CredentialsRefused, Service


class ObjectStore(Service):
    """SeaweedFS `weed mini`: master, volume, filer and S3 gateway in one process, loopback only.

    Only the S3 gateway serves objects, to the keys; lib/services/seaweed.py closes the other components' ports.
    """

    umask = seaweed.UMASK

    @property
    def url(self) -> str:
        return self.settings.s3_endpoint_url

    # weed mini's other components take the ports just above the S3 port; gRPC adds 10000 to each.
    PORTS, GRPC_OFFSET = 5, 10000

    def __post_init__(self) -> None:
        base = self.port
        self.component_ports = {"master": base + 1, "volume": base + 2, "filer": base + 3, "admin": base + 4}
        self.extra_ports = tuple(self.component_ports.values()) + tuple(
            p + self.GRPC_OFFSET for p in (base, *self.component_ports.values()))

    @property
    def bucket(self) -> str | None:
        lake = urlparse(self.settings.lake_uri)
        return lake.netloc if lake.scheme == "s3" else None

    def prepare(self) -> None:
        self.dir.chmod(0o700)  # earlier versions left the lake's files readable by every local user
        (self.dir / "data").mkdir(exist_ok=True)
        seaweed.write_security_config(self.dir)
        identities = {"identities": [{
            "name": "lake",
            "credentials": [{"accessKey": self.settings.aws_access_key_id,
                             "secretKey": self.settings.aws_secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        seaweed.write_private(self.dir / "s3-identities.json", json.dumps(identities).encode())

    def environment(self) -> dict[str, str]:
        return seaweed.weed_environment(dict(os.environ))

    def command(self) -> list[str]:
        weed = Path(sys.executable).parent / "weed"
        ports = self.component_ports
        command = [
            str(weed), f"-config_dir={self.dir}", "mini", f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *seaweed.LOCKDOWN_FLAGS,
            f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}", "-webdav=false",
            f"-s3.config={self.dir / 's3-identities.json'}",
        ]
        if self.bucket:
            command.append(f"-bucket={self.bucket}")
        return command

    def healthy(self) -> tuple[bool, str]:
        from minio.error import S3Error

        from lib.data.lake import s3_client

        client = s3_client(self.settings, timeout=2, retries=0)  # polled: a retry would only log a warning
        try:
            if self.bucket and not client.bucket_exists(self.bucket):
                return False, f"bucket {self.bucket} does not exist yet"
            return True, f"bucket {self.bucket} ready" if self.bucket else "answers"
        except S3Error as error:
            if error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise CredentialsRefused(
                    f"s3 at {self.url} refused the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({error.code}). "
                    "Check them in .env; if you changed them there while the embedded server ran, restart it "
                    "(make down, then make up)"
                ) from error
            return False, f"{error.code}: {error.message}"
        except Exception as error:  # connection refused, timeouts: not up (yet)
            return False, type(getattr(error, "reason", None) or error).__name__
