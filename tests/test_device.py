"""Device and precision: the decision with the machine faked each way, and the device path."""

from __future__ import annotations

import io
import json

import pytest
import torch

from taskpgm import config as config_mod
from taskpgm import device
from taskpgm.config import ExpertsConfig, SignalsConfig
from taskpgm.device import CpuInfo, Placement, resolve
from taskpgm.errors import ConfigError

NATIVE = CpuInfo("AMD EPYC (native bf16)", frozenset({"avx2", "avx512f", "avx512_bf16"}),
                 "x86_64")
AVX2 = CpuInfo("AMD EPYC (avx2 only)", frozenset({"sse4_2", "avx", "avx2", "fma"}), "x86_64")
UNREADABLE = CpuInfo("unknown", frozenset(), "x86_64")


class FakeProbe:
    """Stands for the timed matmul probe; counts its calls."""

    def __init__(self, slowdown: float) -> None:
        self.slowdown, self.calls = slowdown, 0

    def __call__(self, info: CpuInfo) -> dict[str, float]:
        self.calls += 1
        return {"fp32_s": 0.01, "bf16_s": 0.01 * self.slowdown, "slowdown": self.slowdown}


def test_auto_on_a_cpu_with_native_bf16_is_bf16_once_the_probe_confirms():
    probe = FakeProbe(0.6)
    got = resolve("auto", "auto", cpu=NATIVE, cuda_available=False, probe=probe)
    assert (got.device, got.precision) == ("cpu", "bf16")
    assert "native bf16 (avx512_bf16)" in got.why and probe.calls == 1


def test_auto_on_an_avx2_cpu_is_fp32_without_probing():
    probe = FakeProbe(100.0)
    got = resolve("auto", "auto", cpu=AVX2, cuda_available=False, probe=probe)
    assert got == Placement("cpu", "fp32", "no native bf16 (avx2)")
    assert probe.calls == 0


def test_native_flags_but_a_slow_probe_is_fp32():
    got = resolve("cpu", "auto", cpu=NATIVE, probe=FakeProbe(1.7))
    assert got.precision == "fp32" and "1.7x slower" in got.why


def test_unreadable_flags_leave_it_to_the_probe():
    assert resolve("cpu", "auto", cpu=UNREADABLE, probe=FakeProbe(0.5)).precision == "bf16"
    assert resolve("cpu", "auto", cpu=UNREADABLE, probe=FakeProbe(40.0)).precision == "fp32"


def test_cuda_present_is_chosen_with_bf16_where_supported():
    got = resolve("auto", "auto", cuda_available=True, cuda_bf16=True)
    assert (got.device, got.precision, got.why) == ("cuda:0", "bf16", "GPU with native bf16")
    old = resolve("auto", "auto", cuda_available=True, cuda_bf16=False)
    assert (old.device, old.precision) == ("cuda:0", "fp32")
    assert resolve("cuda:1", "fp32", cuda_available=True).device == "cuda:1"
    assert resolve("cpu", "auto", cpu=AVX2, cuda_available=True).device == "cpu"


def test_explicit_bf16_on_a_cpu_without_it_runs_but_warns_with_the_measured_slowdown():
    err = io.StringIO()
    got = resolve("cpu", "bf16", cpu=AVX2, probe=FakeProbe(96.4), stream=err)
    assert got.precision == "bf16"
    assert "warning" in err.getvalue() and "96.4x slower" in err.getvalue()
    quiet = io.StringIO()
    assert resolve("cpu", "bf16", cpu=NATIVE, probe=FakeProbe(0.5), stream=quiet).bf16
    assert quiet.getvalue() == ""


def test_explicit_fp32_is_fp32_everywhere():
    assert resolve("cpu", "fp32", cpu=NATIVE).precision == "fp32"
    assert resolve("cuda", "fp32", cuda_available=True).precision == "fp32"


def test_cuda_asked_for_without_a_gpu_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        resolve("cuda", "auto", cuda_available=False)
    with pytest.raises(ConfigError, match="not auto, cpu, cuda"):
        resolve("tpu", "auto", cuda_available=False)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    text = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
            "flags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16\n\nprocessor\t: 1\n")
    (tmp_path / "cpuinfo").write_text(text)
    info = device.cpu_info(tmp_path / "cpuinfo")
    assert info.model == "AMD EPYC 7B13" and "avx512_bf16" in info.flags
    missing = device.cpu_info(tmp_path / "nothing")
    assert not missing.readable


def test_the_probe_is_cached_per_machine(tmp_path, monkeypatch):
    calls = []

    def fake() -> dict[str, float]:
        calls.append(1)
        return {"fp32_s": 0.002, "bf16_s": 0.2, "slowdown": 100.0}

    monkeypatch.setattr(device, "probe_bf16", fake)
    monkeypatch.setattr(device, "load_per_cpu", lambda: 0.1)
    first = device.cached_probe(AVX2, home=tmp_path)
    again = device.cached_probe(AVX2, home=tmp_path)
    assert first["slowdown"] == again["slowdown"] == 100.0 and len(calls) == 1
    saved = json.loads((tmp_path / device.MACHINE_FILE).read_text())
    assert next(iter(saved.values()))["cpu"] == AVX2.model
    device.cached_probe(NATIVE, home=tmp_path)  # another CPU is another entry
    assert len(calls) == 2


def test_a_probe_taken_under_load_is_measured_again_once_the_machine_is_quiet(
        tmp_path, monkeypatch):
    timings = iter([0.02, 0.002, 0.004])  # fp32 seconds: busy, then quiet, then not asked

    def fake() -> dict[str, float]:
        fp32 = next(timings)
        return {"fp32_s": fp32, "bf16_s": fp32 / 3, "slowdown": 1 / 3}

    monkeypatch.setattr(device, "probe_bf16", fake)
    load = {"now": 1.0}
    monkeypatch.setattr(device, "load_per_cpu", lambda: load["now"])
    busy = device.cached_probe(NATIVE, home=tmp_path)
    assert busy["fp32_s"] == 0.02 and busy["load_per_cpu"] == 1.0
    assert device.cached_probe(NATIVE, home=tmp_path)["fp32_s"] == 0.02  # still busy: kept
    load["now"] = 0.1
    quiet = device.cached_probe(NATIVE, home=tmp_path)  # quiet now: measured again
    assert quiet["fp32_s"] == 0.002 and quiet["load_per_cpu"] == 0.1
    assert device.cached_probe(NATIVE, home=tmp_path)["fp32_s"] == 0.002  # a quiet one stays
    load["now"] = 2.0
    assert device.cached_probe(NATIVE, home=tmp_path)["fp32_s"] == 0.002


def test_the_real_probe_times_both_precisions():
    result = device.probe_bf16(size=64)
    assert result["fp32_s"] > 0 and result["bf16_s"] > 0
    assert result["slowdown"] == pytest.approx(result["bf16_s"] / result["fp32_s"])


def test_old_bf16_keys_are_rejected_with_the_new_key_named():
    text = "experts:\n  bf16: true\nsignals:\n  bf16: false\nevaluation:\n  bf16: true\n"
    with pytest.raises(ConfigError) as err:
        config_mod.parse(text, source="old.yaml")
    msg = str(err.value)
    assert "3 problem(s)" in msg
    for section, line in (("experts", 2), ("signals", 4), ("evaluation", 6)):
        assert f"old.yaml:{line}: {section}.bf16: replaced by {section}.precision" in msg


def test_device_key_is_checked():
    assert config_mod.parse("base:\n  device: cuda:1\n").base.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"base\.device"):
        config_mod.parse("base:\n  device: gpu\n")


def test_run_placements_cover_every_model_stage():
    cfg = config_mod.parse("base:\n  device: cpu\nsignals:\n  precision: fp32\n")
    got = device.run_placements(cfg, cpu=AVX2, probe=FakeProbe(100.0))
    assert set(got) == {"experts", "signals", "evaluation"}
    assert all(p == Placement("cpu", "fp32", "no native bf16 (avx2)")
               for stage, p in got.items() if stage != "signals")
    assert got["signals"].why == "as configured"
    assert device.summary_line(got).startswith("compute: experts cpu fp32")


def test_precision_enters_fingerprints_under_the_key_it_had_before():
    from taskpgm import signals
    from taskpgm.artifacts import _canonical, fingerprint
    from taskpgm.experts import DEFAULTS, fingerprint_settings

    bf16 = fingerprint_settings(ExpertsConfig(), Placement("cpu", "bf16"))
    assert DEFAULTS["bf16"] is True  # a default bf16 expert: no key in its fingerprint
    assert fingerprint("experts", 2, [], bf16, DEFAULTS) == fingerprint("experts", 2, [], {}, {})
    fp32 = fingerprint_settings(ExpertsConfig(), Placement("cpu", "fp32"))
    assert {k for k in fp32 if _canonical(fp32[k]) != DEFAULTS[k]} == {"bf16"}
    assert "precision" not in fp32 and "layers" not in fp32
    top = fingerprint_settings(ExpertsConfig(layers=4), Placement("cpu", "bf16"))
    assert top["layers"] == 4
    scoring_settings = signals.fingerprint_settings
    assert scoring_settings(SignalsConfig(), Placement())["bf16"] is False
    assert signals.DEFAULTS["bf16"] is False
    assert scoring_settings(SignalsConfig(), Placement("cpu", "bf16"))["bf16"] is True


def test_autocast_follows_the_placement():
    x = torch.randn(4, 4)
    with Placement("cpu", "bf16").autocast():
        assert (x @ x).dtype == torch.bfloat16
    with Placement("cpu", "fp32").autocast():
        assert (x @ x).dtype == torch.float32


# The device path on the tiny model: on the CPU always, on CUDA where there is one.

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine"))]


@pytest.mark.parametrize("where", DEVICES)
def test_train_and_score_on_the_device(where, tmp_path):
    import tiny_model
    from taskpgm.experts import ensure_experts
    from taskpgm.models import Base
    from taskpgm.signals import ensure_signals, score

    base = Base(str(tiny_model.tiny_dir(str(tmp_path))), device=where)
    cfg = ExpertsConfig(steps=3, batch_size=4, lr=1e-2, checkpoint_every=2, precision="fp32",
                        layers=1)
    experts = ensure_experts(base, {"colours": tiny_model.colour_task(20)}, cfg,
                             root=tmp_path / "a", progress_every=0)
    loaded = base.load()
    assert device.model_device(loaded.model).type == where
    log = json.loads((experts["colours"].path / "training_log.json").read_text())
    assert log["compute"]["device"].startswith(where) and log["compute"]["precision"] == "fp32"
    probes = {"colours": tiny_model.colour_task(6, seed=5)}
    sig = ensure_signals(base, experts, probes, SignalsConfig(batch_size=4), root=tmp_path / "a")
    assert sig.manifest["compute"]["device"].startswith(where)
    got = sig.arrays("base")["choice_ll"]
    cpu_model = Base(str(base.path), device="cpu").load()
    want = score(cpu_model.model, cpu_model.tokenizer, probes["colours"], SignalsConfig())
    assert got == pytest.approx(want["choice_ll"], abs=1e-3)


def test_lora_in_the_top_layers_only(tmp_path):
    import tiny_model
    from taskpgm.models import Base
    from taskpgm.trainer import lora_config

    loaded = Base(str(tiny_model.tiny_dir(str(tmp_path)))).load()
    n = loaded.model.config.num_hidden_layers
    cfg = lora_config(ExpertsConfig(layers=1), n)
    assert cfg.layers_to_transform == [n - 1]
    assert lora_config(ExpertsConfig(), n).layers_to_transform is None
