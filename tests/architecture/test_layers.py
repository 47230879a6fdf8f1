"""Layers import one way (docs/architecture.md, "Layers"): no upward edge, no cycle."""

from __future__ import annotations

from tests.architecture.imports import LAYERS, cycles, graph, layer_of, modules


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)  # raises, naming the module, when a new top-level name has no layer


def test_no_import_reaches_a_higher_layer() -> None:
    upward = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    assert not cycles(), f"import cycles: {cycles()}"


def test_the_checker_sees_an_upward_edge_and_a_cycle(monkeypatch) -> None:
    """The rules above would fail on a real violation (a test of the test)."""
    fake = {
        "migrainemamba.data.a": frozenset({"migrainemamba.service.b"}),
        "migrainemamba.service.b": frozenset({"migrainemamba.data.a"}),
    }
    monkeypatch.setattr("tests.architecture.imports.graph", lambda: fake)
    from tests.architecture import imports

    assert imports.cycles() == [sorted(fake)]
    assert imports.layer_of("migrainemamba.service.b") > imports.layer_of("migrainemamba.data.a")
    assert len(LAYERS) >= 7


def test_trainer_group_composes_for_cpu_and_gpu() -> None:
    """`trainer=gpu` composes into the Lightning settings the sequence stages pass on."""
    from migrainemamba.config import load_config, to_dict
    from migrainemamba.models.pretrain import TrainerConfig

    cpu = TrainerConfig.from_dict(to_dict(load_config().trainer))
    gpu = TrainerConfig.from_dict(to_dict(load_config(["trainer=gpu"]).trainer))
    ddp = TrainerConfig.from_dict(to_dict(load_config(["trainer=cpu_ddp"]).trainer))
    assert (cpu.accelerator, cpu.devices) == ("cpu", 1)
    assert (gpu.accelerator, gpu.strategy, gpu.devices) == ("gpu", "ddp", -1)
    assert (ddp.accelerator, ddp.strategy, ddp.devices) == ("cpu", "ddp", 2)  # tests/integration/test_ddp.py runs it
