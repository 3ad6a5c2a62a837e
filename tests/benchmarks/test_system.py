"""benchmarks.system: what machine a result was measured on."""

from __future__ import annotations

from benchmarks.system import CPU_FEATURES, cpu_features, cpu_model, system_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9999 Test
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 sha_ni
processor\t: 1
model name\t: AMD EPYC 9999 Test
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 sha_ni
"""


def test_cpu_features_lists_the_known_flags_in_order(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_features(str(path)) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert cpu_model(str(path)) == "AMD EPYC 9999 Test"


def test_cpu_features_of_an_older_cpu_and_of_arm(tmp_path):
    zen1 = tmp_path / "zen1"
    zen1.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert cpu_features(str(zen1)) == ["avx2"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\n")
    assert cpu_features(str(arm)) == []


def test_cpu_features_unreadable_or_without_flags(tmp_path):
    assert cpu_features(str(tmp_path / "missing")) is None
    empty = tmp_path / "empty"
    empty.write_text("processor\t: 0\n")
    assert cpu_features(str(empty)) is None


def test_system_info_records_the_features():
    info = system_info()
    assert "cpu_features" in info
    assert info["cpu_features"] is None or set(info["cpu_features"]) <= set(CPU_FEATURES)
