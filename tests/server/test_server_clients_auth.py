"""Real clients through ``auth.htpasswd`` and ``http.tls``: skopeo, oras-py and python-dxf.

- skopeo pushes and pulls an OCI image with ``--dest-creds``/``--src-creds`` (plain HTTP), every
  blob and the manifest checked by digest; a wrong password is refused with skopeo's error
  naming ``unauthorized``, and nothing is pushed;
- skopeo over TLS, verifying the server with ``--dest-cert-dir``/``--src-cert-dir`` (the test CA
  as ``ca.crt``; no ``--tls-verify=false``), with credentials too; with ``clientcas`` the client
  certificate in the cert dir (``client.cert``, ``client.key``) lets it in, and without one the
  handshake fails before any HTTP is spoken;
- oras-py (its ``basic`` auth backend) and python-dxf (which sends Basic credentials only over
  TLS) push and pull through htpasswd over TLS, given the CA file to verify the server with.

Token auth clients are tested with the token server (``auth.token``), not here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import dxf
import pytest

from support.goregistry import (
    SkopeoError,
    check_pulled_dir,
    make_oci_image_layout,
    run_skopeo,
    sha256_digest,
    skopeo_pull,
    skopeo_push,
)
from support.server import DistblobServer
from support.tls import PKI, make_pki

pytestmark = pytest.mark.timeout(180)

USER, PASSWORD = "ci", "s3cret-Pa55"
COST = 5  # bcrypt's cost does not change what a client sees; 5 keeps the tests quick
MIB = 1 << 20
BIG = (2 << 20) + 11  # above the 1 MiB the registry reads whole


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST))
    path.write_bytes(USER.encode() + b":" + hashed + b"\n")
    return path


def server(root: Path, htpasswd: Path, pki: PKI | None = None, **tls: object) -> DistblobServer:
    """``distblob serve`` with htpasswd, and TLS when ``pki`` is given (``tls``: more of
    ``http.tls``; a client context presenting the client certificate when ``clientcas`` is)."""
    config: dict[str, object] = {"auth": {"htpasswd": {"realm": "clients", "path": str(htpasswd)}}}
    context = None
    if pki is not None:
        config["http"] = {"tls": pki.tls_config(**tls)}
        context = pki.client_context(client="clientcas" in tls)
    return DistblobServer(root, extra_config=config, client_tls=context)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, htpasswd: Path) -> Iterator[DistblobServer]:
    with server(tmp_path_factory.mktemp("plain"), htpasswd) as srv:
        yield srv


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory, htpasswd: Path, pki: PKI
) -> Iterator[DistblobServer]:
    with server(tmp_path_factory.mktemp("tls"), htpasswd, pki) as srv:
        yield srv


def basic() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def stderr(error: SkopeoError) -> str:
    return error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else ""


# -- skopeo ------------------------------------------------------------------------------------


def test_skopeo_pushes_and_pulls_with_creds(plain: DistblobServer, tmp_path: Path) -> None:
    image = make_oci_image_layout(tmp_path / "layout", [os.urandom(BIG), b"small layer"])
    creds = f"{USER}:{PASSWORD}"
    skopeo_push(image, plain.host, "creds/app:v1", creds=creds)
    out = tmp_path / "out"
    run_skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        f"docker://{plain.host}/creds/app:v1",
        f"dir:{out}",
    )
    check_pulled_dir(out, image)
    # Without credentials the pull is refused.
    with pytest.raises(SkopeoError) as refused:
        skopeo_pull(plain.host, "creds/app:v1", tmp_path / "anonymous")
    assert "unauthorized" in stderr(refused.value).lower()


def test_skopeo_with_a_wrong_password_is_unauthorized(
    plain: DistblobServer, tmp_path: Path
) -> None:
    image = make_oci_image_layout(tmp_path / "layout", [b"refused layer"])
    with pytest.raises(SkopeoError) as refused:
        skopeo_push(image, plain.host, "creds/refused:v1", creds=f"{USER}:wrong")
    assert "unauthorized" in stderr(refused.value).lower()
    with plain.client() as client:
        response = client.request(
            "GET", "/v2/_catalog", headers={"Authorization": basic()}, expect=(200,)
        )
    assert "creds/refused" not in json.loads(response.body)["repositories"]


@pytest.mark.parametrize("required", [False, True], ids=["server-cert", "client-certs"])
def test_skopeo_over_tls_with_cert_dirs_and_creds(
    htpasswd: Path, pki: PKI, tmp_path: Path, required: bool
) -> None:
    image = make_oci_image_layout(tmp_path / "layout", [os.urandom(BIG), b"tls layer"])
    cert_dir = pki.cert_dir(f"skopeo-{required}", client=required)
    tls = {"clientcas": [str(pki.ca)]} if required else {}
    creds = f"{USER}:{PASSWORD}"
    with server(tmp_path / "root", htpasswd, pki, **tls) as srv:
        run_skopeo(
            "copy",
            "--preserve-digests",
            "--dest-cert-dir",
            str(cert_dir),
            "--dest-creds",
            creds,
            f"oci:{image['path']}:v1",
            f"docker://{srv.host}/tls/app:v1",
        )
        out = tmp_path / "out"
        run_skopeo(
            "copy",
            "--src-cert-dir",
            str(cert_dir),
            "--src-creds",
            creds,
            f"docker://{srv.host}/tls/app:v1",
            f"dir:{out}",
        )
        check_pulled_dir(out, image)
        if required:
            # The CA alone verifies the server, but the server wants a client certificate.
            with pytest.raises(SkopeoError) as refused:
                run_skopeo(
                    "copy",
                    "--src-cert-dir",
                    str(pki.cert_dir(f"ca-only-{required}", client=False)),
                    "--src-creds",
                    creds,
                    f"docker://{srv.host}/tls/app:v1",
                    f"dir:{tmp_path / 'refused'}",
                )
            message = stderr(refused.value)
            # Refused in the handshake, before any HTTP (the server logs the failed handshake).
            # The Go registry's alert reaches skopeo as "remote error: tls: bad certificate";
            # distblob's never does: the event loop's TLS transport drops the connection
            # without sending it, so skopeo reads an EOF or a reset.
            assert "pinging container registry" in message, message
            assert any(s in message for s in ("bad certificate", "EOF", "reset")), message
            assert "handshake with 127.0.0.1:" in srv.log_text()
        assert "unexpected error" not in srv.log_text()


def test_skopeo_refuses_a_server_its_cert_dir_does_not_vouch_for(
    tls: DistblobServer, pki: PKI, tmp_path: Path
) -> None:
    # TLS is verified: a cert dir whose CA did not sign the server's certificate fails.
    other = tmp_path / "other-ca"
    other.mkdir()
    (other / "ca.crt").write_bytes(pki.other_ca.read_bytes())
    with pytest.raises(SkopeoError) as refused:
        run_skopeo(
            "inspect",
            "--raw",
            "--cert-dir",
            str(other),
            "--creds",
            f"{USER}:{PASSWORD}",
            f"docker://{tls.host}/tls/none:v1",
        )
    assert "certificate signed by unknown authority" in stderr(refused.value)


# -- oras-py and python-dxf ----------------------------------------------------------------------


def test_oras_pushes_and_pulls_through_htpasswd_over_tls(
    tls: DistblobServer, pki: PKI, tmp_path: Path
) -> None:
    import oras.client as oras_client

    payload = os.urandom(BIG)
    (tmp_path / "artifact.bin").write_bytes(payload)
    client = oras_client.OrasClient(hostname=tls.host, tls_verify=str(pki.ca), auth_backend="basic")
    client.auth.set_basic_auth(USER, PASSWORD)
    target = f"{tls.host}/oras/artifact:v1"
    cwd = os.getcwd()
    os.chdir(tmp_path)  # oras-py pushes paths relative to the working directory
    try:
        assert client.push(files=["artifact.bin"], target=target, quiet=True).status_code == 201
        files = client.pull(target=target, outdir=str(tmp_path / "pulled"))
    finally:
        os.chdir(cwd)
    assert [Path(f).read_bytes() for f in files] == [payload]
    layers = client.get_manifest(target)["layers"]
    assert [layer["digest"] for layer in layers] == [sha256_digest(payload)]
    # With a wrong password the same client is refused.
    wrong = oras_client.OrasClient(hostname=tls.host, tls_verify=str(pki.ca), auth_backend="basic")
    wrong.auth.set_basic_auth(USER, "wrong")
    with pytest.raises(ValueError, match="Unauthorized"):
        wrong.get_manifest(target)


def _dxf(tls: DistblobServer, pki: PKI, repo: str, password: str) -> dxf.DXF:
    def auth(client: dxf.DXFBase, response: object) -> None:
        client.authenticate(USER, password, response=response)

    return dxf.DXF(tls.host, repo, auth=auth, tlsverify=str(pki.ca))


def test_dxf_pushes_and_pulls_through_htpasswd_over_tls(tls: DistblobServer, pki: PKI) -> None:
    payload = os.urandom(BIG)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    client = _dxf(tls, pki, "dxf/app", PASSWORD)
    pieces = (payload[i : i + 256 * 1024] for i in range(0, len(payload), 256 * 1024))
    assert client.push_blob(data=pieces, digest=digest) == digest
    client.set_alias("v1", digest)
    chunks, size = client.pull_blob(digest, size=True, chunk_size=MIB)
    assert b"".join(chunks) == payload and size == len(payload)
    assert client.get_alias("v1") == [digest]
    # A wrong password: dxf asks once, is answered 401 again, and raises.
    with pytest.raises(dxf.exceptions.DXFUnauthorizedError):
        _dxf(tls, pki, "dxf/app", "wrong").blob_size(digest)
