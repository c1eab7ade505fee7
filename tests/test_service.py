"""install.sh --service/--uninstall and scripts/service.sh: the systemd unit they write (checked by
systemd-analyze where it is installed) and the system commands they would run (SERVICE_DRY_RUN), with the
unit written under a temporary root (SERVICE_ROOT) so the machine running the tests is left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVICE = ROOT / "scripts" / "service.sh"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the system service is Linux's (systemd)")


def run(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp), "SERVICE_ROOT": str(tmp / "root"), "SERVICE_DRY_RUN": "1",
            "OLLAMALIKE_SERVICE_USER": "ollamalike-test-no-such-user", **env}
    return subprocess.run(["bash", *args], env=full, capture_output=True, text=True, timeout=60)


def fake_command(tmp: Path) -> Path:
    cmd = tmp / "bin" / "ollamalike"
    cmd.parent.mkdir(parents=True, exist_ok=True)
    cmd.write_text("#!/bin/sh\necho ollamalike 0.0\n")
    cmd.chmod(0o755)
    return cmd


def test_unit_runs_serve_as_the_service_user_and_systemd_accepts_it(tmp_path):
    cmd = fake_command(tmp_path)
    out = run(str(SERVICE), "unit", str(cmd), "/srv/models", tmp=tmp_path, OLLAMALIKE_SERVICE_USER="llm")
    assert out.returncode == 0, out.stderr
    unit = out.stdout
    assert f"ExecStart={cmd} serve\n" in unit
    assert "User=llm\nGroup=llm\n" in unit and "Restart=always" in unit
    assert 'Environment="OLLAMALIKE_MODELS=/srv/models"' in unit
    assert "WantedBy=multi-user.target" in unit
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's text was checked, not systemd's reading of it")
    path = tmp_path / "ollamalike.service"
    path.write_text(unit)
    ok = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    # and it does fail on a unit whose command is missing
    path.write_text(unit.replace(str(cmd), str(tmp_path / "missing")))
    bad = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "missing" in bad.stderr


def test_service_install_and_uninstall(tmp_path):
    cmd = fake_command(tmp_path)
    unit = tmp_path / "root" / "etc" / "systemd" / "system" / "ollamalike.service"
    out = run(str(SERVICE), "install", str(cmd), tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert unit.is_file() and f"ExecStart={cmd} serve" in unit.read_text()
    assert "would run: useradd -r -s /bin/false -U -m -d /usr/share/ollamalike ollamalike-test-no-such-user" in out.stdout
    assert "would run: mkdir -p /usr/share/ollamalike/models" in out.stdout
    assert "would run: systemctl enable --now ollamalike" in out.stdout
    out = run(str(SERVICE), "uninstall", tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not unit.exists()
    assert "would run: systemctl disable --now ollamalike" in out.stdout
    assert "would run: userdel ollamalike-test-no-such-user" in out.stdout
    assert "models in /usr/share/ollamalike are kept" in out.stdout


def test_service_refuses_a_missing_command(tmp_path):
    out = run(str(SERVICE), "install", str(tmp_path / "nothing"), tmp=tmp_path)
    assert out.returncode == 1 and "is not there: install first" in out.stderr
    assert not (tmp_path / "root" / "etc").exists()


def test_install_sh_uninstall_removes_the_service_and_the_command(tmp_path):
    cmd = fake_command(tmp_path)
    bin_dir = tmp_path / "linked"
    bin_dir.mkdir()
    (bin_dir / "ollamalike").symlink_to(cmd)
    assert run(str(SERVICE), "install", str(cmd), tmp=tmp_path).returncode == 0
    out = run(str(ROOT / "install.sh"), "--uninstall", tmp=tmp_path, OLLAMALIKE_BIN_DIR=str(bin_dir))
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "root" / "etc" / "systemd" / "system" / "ollamalike.service").exists()
    assert not (bin_dir / "ollamalike").exists() and not (bin_dir / "ollamalike").is_symlink()
    assert cmd.exists()  # the link goes, what it pointed to stays
    assert "models are kept" in out.stdout


def test_install_sh_models_needs_service(tmp_path):
    out = run(str(ROOT / "install.sh"), "--models", "/srv/m", tmp=tmp_path)
    assert out.returncode == 2 and "--models is for --service" in out.stderr


def _container_runtime() -> str | None:
    for tool in ("docker", "podman"):
        if shutil.which(tool) and subprocess.run([tool, "info"], capture_output=True, timeout=30).returncode == 0:
            return tool
    return None


@pytest.mark.timeout(1800)
def test_dockerfile_builds_and_serves(tmp_path):
    tool = _container_runtime()
    if tool is None:
        pytest.skip("no container runtime answers here (docker/podman info fails): the Dockerfile is built "
                    "only where one runs")
    tag = "ollamalike-test:ci"
    built = subprocess.run([tool, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1700)
    assert built.returncode == 0, built.stderr[-3000:]
    out = subprocess.run([tool, "run", "--rm", tag, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ollamalike version is" in out.stdout, out.stderr
