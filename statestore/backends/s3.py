"""S3 cold tier: ``s3://BUCKET/<prefix>/runs/<run_id>/blobs/<sha256>``.

A blob's key is its content hash, so a write is a conditional create (``If-None-Match: *``): the
first writer stores it, every later writer of the same bytes gets 412 and is done, and nothing is
ever overwritten. The request also carries the SHA-256 we already know, so S3 refuses a body that
was damaged on the way.
"""

from __future__ import annotations

import base64
import random
import time
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from statestore.backends.aws import aws_client
from statestore.cold import ColdTier
from statestore.errors import BlobNotFoundError, StateStoreError, StoreUnavailableError

_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_PUT_TRIES = 4
_NOT_SUPPORTED = frozenset({"NotImplemented", "InvalidArgument"})


class S3ColdTier(ColdTier):
    scheme = "s3"
    fetch_concurrency = 16

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        create: bool = False,
        client: Any = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        max_attempts: int = 4,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self._owns_client = client is None
        if client is None:
            client = aws_client(
                "s3",
                purpose=f"bucket {bucket!r}",
                region=region,
                endpoint_url=endpoint_url,
                max_attempts=max_attempts,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # One connection per concurrent GET of get_many, and a few for writers.
                max_pool_connections=self.fetch_concurrency + 4,
                # Custom endpoints (moto, MinIO, LocalStack) rarely resolve bucket subdomains.
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
        # A client (unlike a boto3 resource) is thread-safe: get_many shares it across threads.
        self._client = client
        self.endpoint = str(client.meta.endpoint_url)
        # Flipped off (once, with the reason in a comment below) if the endpoint rejects
        # conditional writes.
        self._conditional_put = True
        if create:
            self._create_bucket()

    # ------------------------------------------------------------------ plumbing

    def _object_key(self, run_id: str, sha256: str) -> str:
        return f"{self._run_prefix(run_id)}{sha256}"

    def _run_prefix(self, run_id: str) -> str:
        # The trailing slash keeps run "a" from listing the blobs of run "ab".
        base = f"runs/{run_id}/blobs/"
        return f"{self.prefix}/{base}" if self.prefix else base

    def key(self, run_id: str, sha256: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(run_id, sha256)}"

    def _fail(self, op: str, exc: Exception, what: str) -> NoReturn:
        where = f"S3 bucket {self.bucket!r} at {self.endpoint}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                raise StoreUnavailableError(
                    f"{where} does not exist; deploy the SAM stack (template.yaml) or open the "
                    "store with create=1 (s3://BUCKET/PREFIX?create=1)"
                ) from exc
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or (
                isinstance(status, int) and status >= 500
            ):
                raise StoreUnavailableError(f"{where}: {op} {what} failed: {code}") from exc
            raise StateStoreError(f"{where}: {op} {what} failed: {code}: {exc}") from exc
        raise StoreUnavailableError(f"{where}: {op} {what} failed: {exc}") from exc

    def _create_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                self._fail("HeadBucket", exc, "")
        except BotoCoreError as exc:
            self._fail("HeadBucket", exc, "")
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self.region or self._client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**params)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "OperationAborted"):
                self._fail("CreateBucket", exc, "")
        except BotoCoreError as exc:
            self._fail("CreateBucket", exc, "")

    # ------------------------------------------------------------------ primitives

    def _put(self, run_id: str, sha256: str, data: bytes) -> None:
        key = self._object_key(run_id, sha256)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        for attempt in range(_PUT_TRIES):
            if not self._conditional_put and self._exists(key):
                return
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": data,
                "ChecksumSHA256": checksum,
            }
            if self._conditional_put:
                params["IfNoneMatch"] = "*"
            try:
                self._client.put_object(**params)
                return
            except ClientError as exc:
                code = _code(exc)
                if code == "PreconditionFailed":
                    return  # the same bytes are there already: content addressing makes it ours
                if code == "ConditionalRequestConflict" and attempt + 1 < _PUT_TRIES:
                    # Another writer of this very blob is mid-upload; once it lands we get 412.
                    time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
                    continue
                if code in _NOT_SUPPORTED and self._conditional_put:
                    # An S3-compatible endpoint without conditional writes: fall back to
                    # HEAD-then-PUT. Two writers may then both PUT, but of identical bytes
                    # (the key is their hash), so the race is harmless.
                    self._conditional_put = False
                    continue
                self._fail("PutObject", exc, key)
            except BotoCoreError as exc:
                self._fail("PutObject", exc, key)
        raise StoreUnavailableError(
            f"S3 bucket {self.bucket!r} at {self.endpoint}: PutObject {key} kept conflicting"
        )

    def _exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            self._fail("HeadObject", exc, key)
        except BotoCoreError as exc:
            self._fail("HeadObject", exc, key)
        return True

    def _get(self, run_id: str, sha256: str) -> bytes:
        key = self._object_key(run_id, sha256)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise BlobNotFoundError(f"no blob s3://{self.bucket}/{key}") from None
            self._fail("GetObject", exc, key)
        except BotoCoreError as exc:
            self._fail("GetObject", exc, key)

    def _delete_run(self, run_id: str) -> int:
        prefix = self._run_prefix(run_id)
        keys: list[str] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        try:
            while True:
                page = self._client.list_objects_v2(**params)
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                params["ContinuationToken"] = token
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start : start + _DELETE_BATCH]
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                errors = response.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StoreUnavailableError(
                        f"S3 bucket {self.bucket!r}: {len(errors)} blobs of run {run_id!r} were "
                        f"not deleted (first: {first.get('Key')}: {first.get('Code')}); run "
                        "delete_run again"
                    )
        except ClientError as exc:
            self._fail("DeleteObjects", exc, prefix)
        except BotoCoreError as exc:
            self._fail("DeleteObjects", exc, prefix)
        return len(keys)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
