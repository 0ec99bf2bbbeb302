"""How the Kubernetes build derives its throwaway module from the release's own go.mod."""

from pathlib import Path

import pytest

from payplane.devinfra import kube_build
from payplane.devinfra.errors import BuildFailedError

KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/kylelemons/godebug v1.1.0 // indirect
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/example/forked => github.com/example/fork v1.0.0
)

replace k8s.io/externaljwt => ./staging/src/k8s.io/externaljwt
"""


def test_staging_modules_are_read_from_both_replace_forms() -> None:
    assert kube_build.staging_modules(KUBERNETES_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/client-go",
        "k8s.io/externaljwt",
    ]


def test_go_mod_edit_mirrors_go_and_godebug_and_pins_staging_to_published_versions() -> None:
    flags = kube_build.go_mod_edit_flags(KUBERNETES_GO_MOD, "v0.34.4")

    assert flags == [
        "-go=1.24.0",
        "-godebug=default=go1.24",
        "-replace=k8s.io/api=k8s.io/api@v0.34.4",
        "-replace=k8s.io/client-go=k8s.io/client-go@v0.34.4",
        "-replace=k8s.io/externaljwt=k8s.io/externaljwt@v0.34.4",
    ]


def test_version_ldflags_stamp_both_version_packages() -> None:
    ldflags = kube_build.kubernetes_ldflags("v1.34.4")

    for package in kube_build.VERSION_PACKAGES:
        assert f"-X {package}.gitVersion=v1.34.4" in ldflags
        assert f"-X {package}.gitMinor=34" in ldflags
    assert ldflags.startswith("-s -w -buildid=")


def _dirs_with_binary(tmp_path: Path) -> tuple[kube_build.BuildDirs, Path]:
    dirs = kube_build.BuildDirs(tmp_path / "k8s-v1.34.4")
    binary = dirs.bin / "kube-apiserver"
    return dirs, binary


def test_binaries_reporting_the_pinned_version_are_stamped_without_a_build(tmp_path: Path) -> None:
    dirs, binary = _dirs_with_binary(tmp_path)
    builds: list[str] = []

    kube_build.ensure_built(
        dirs,
        [binary],
        what="k8s",
        cold_duration="~1 s",
        log_path=tmp_path / "build.log",
        binaries_ok=lambda: True,
        build=lambda: builds.append("built"),
    )

    assert builds == []
    assert dirs.stamp.is_file()


def test_a_stamped_build_with_its_binaries_is_not_even_probed(tmp_path: Path) -> None:
    dirs, binary = _dirs_with_binary(tmp_path)
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    dirs.stamp.write_text("ok\n")

    def probe() -> bool:
        raise AssertionError("probed")

    kube_build.ensure_built(
        dirs,
        [binary],
        what="k8s",
        cold_duration="~1 s",
        log_path=tmp_path / "build.log",
        binaries_ok=probe,
        build=probe,
    )


def test_a_build_whose_binaries_miss_the_version_fails_unstamped(tmp_path: Path) -> None:
    dirs, binary = _dirs_with_binary(tmp_path)
    builds: list[str] = []

    with pytest.raises(BuildFailedError, match="do not report that version"):
        kube_build.ensure_built(
            dirs,
            [binary],
            what="k8s",
            cold_duration="~1 s",
            log_path=tmp_path / "build.log",
            binaries_ok=lambda: False,
            build=lambda: builds.append("built"),
        )

    assert builds == ["built"]
    assert not dirs.stamp.exists()


def test_version_probe_requires_the_exact_version_in_the_output() -> None:
    assert kube_build.reports_version(["echo", "Kubernetes v1.34.4"], "v1.34.4")
    assert not kube_build.reports_version(["echo", "Kubernetes v0.0.0-master"], "v1.34.4")
    assert not kube_build.reports_version(["/nonexistent/kube-apiserver", "--version"], "v1.34.4")
