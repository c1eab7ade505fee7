"""The memory estimate and the GPU offload decision, with fake device inventories."""

from __future__ import annotations

import os

import pytest

from ollamalike.errors import OllamaError
from ollamalike.runner.process import RunnerSpec, runner_command
from ollamalike.server import devices
from ollamalike.server.offload import GPU_OVERHEAD, Gpu, Inventory, Planner, decide, estimate, tensor_bytes
from ollamalike.store.gguf import TensorInfo, read_gguf
from tests.ggufwriter import make_gguf, write

GiB, MiB = 1 << 30, 1 << 20
BIG_RAM = 64 * GiB


def synthetic(tmp_path, layers=4, embd=256, vocab=1000, tied=False):
    """A llama-shaped header whose blocks are Q8_0 (4 x embd x embd per block) and an F16 output."""
    meta = [("general.architecture", 8, "llama"), ("llama.block_count", 4, layers),
            ("llama.embedding_length", 4, embd), ("llama.attention.head_count", 4, 8),
            ("llama.attention.head_count_kv", 4, 2), ("llama.context_length", 4, 4096),
            ("tokenizer.ggml.tokens", (9, 8), [f"t{i}" for i in range(vocab)])]
    tensors = [("token_embd.weight", (embd, vocab), 1, 0)]
    for i in range(layers):
        tensors += [(f"blk.{i}.attn_q.weight", (embd, embd * 4), 8, 0), (f"blk.{i}.attn_norm.weight", (embd,), 0, 0)]
    tensors.append(("output_norm.weight", (embd,), 0, 0))
    if not tied:
        tensors.append(("output.weight", (embd, vocab), 1, 0))
    return read_gguf(write(tmp_path, make_gguf(meta, tensors)))


def test_tensor_bytes_by_ggml_type():
    assert tensor_bytes(TensorInfo("a", (64, 2), 0, 0)) == 512  # F32
    assert tensor_bytes(TensorInfo("a", (64, 2), 1, 0)) == 256  # F16
    assert tensor_bytes(TensorInfo("a", (64, 2), 2, 0)) == 4 * 18  # Q4_0: 32 values in 18 bytes
    assert tensor_bytes(TensorInfo("a", (256, 3), 12, 0)) == 3 * 144  # Q4_K: 256 values in 144 bytes


def test_tensor_table_accounts_for_the_whole_real_file(smollm2_gguf):
    """Sizes from the GGML type table match the file: the last tensor ends where the file does."""
    info = read_gguf(smollm2_gguf)
    last = max(info.tensors, key=lambda t: t.offset)
    data_end = last.offset + tensor_bytes(last)
    total = sum(tensor_bytes(t) for t in info.tensors)
    size = os.path.getsize(smollm2_gguf)
    assert data_end <= size and size - total < 4 * MiB  # the rest is the header and alignment
    est = estimate(info, 2048)
    assert est.n_layers == 30 and len(set(est.layers)) == 1
    assert est.weights + est.output - est.output >= total - 1  # token_embd doubles as the output layer
    assert est.output > 0


def test_estimate_layers_kv_and_tied_output(tmp_path):
    info = synthetic(tmp_path)
    est = estimate(info, 1024, parallel=2)
    assert est.n_layers == 4
    assert est.layers[0] == (256 * 1024) // 32 * 34 + 256 * 4
    assert est.output == 256 * 1000 * 2 + 256 * 4  # output.weight F16 + output_norm F32
    assert est.cpu_only == 256 * 1000 * 2  # token_embd stays on the CPU
    # K and V: (32 + 32) x 2 kv heads x f16, for 1024 x 2 cells, per layer
    assert est.kv_per_layer == 64 * 2 * 2 * 2048
    tied = estimate(synthetic(tmp_path, tied=True), 1024)
    assert tied.output == 256 * 4 + 256 * 1000 * 2  # token_embd duplicated as the output


def test_cpu_only_when_no_gpu(tmp_path):
    est = estimate(synthetic(tmp_path), 1024)
    plan = decide(est, Inventory((), BIG_RAM))
    assert plan.num_gpu == 0 and plan.size_vram == 0 and plan.size > est.weights + est.kv
    assert plan.reason == "no GPU found"
    assert decide(est, Inventory((Gpu(0, "g", "cuda", 80 * GiB, 80 * GiB),), BIG_RAM), num_gpu=0).size_vram == 0


def test_one_big_gpu_takes_everything(tmp_path):
    est = estimate(synthetic(tmp_path), 1024)
    plan = decide(est, Inventory((Gpu(0, "H100", "cuda", 80 * GiB, 79 * GiB),), BIG_RAM))
    assert plan.num_gpu == est.n_layers + 1 and plan.tensor_split == ()
    assert plan.size_vram == est.output + sum(est.layers) + est.kv + est.graph_full
    assert plan.size == plan.size_vram + est.cpu_only  # only the token embeddings stay behind


def test_small_gpu_takes_the_last_layers(tmp_path):
    est = estimate(synthetic(tmp_path, layers=10), 1024)
    layer = est.layers[0] + est.kv_per_layer
    free = GPU_OVERHEAD["cuda"] + est.graph_partial + est.output + 3 * layer + layer // 2
    plan = decide(est, Inventory((Gpu(0, "small", "cuda", 8 * GiB, free),), BIG_RAM))
    assert plan.num_gpu == 4  # the output layer and three blocks
    assert plan.size_vram == est.graph_partial + est.output + 3 * layer
    assert 0 < plan.size_vram < plan.size and "4/11 layers" in plan.reason


def test_gpu_too_small_for_one_layer_falls_back_to_cpu(tmp_path):
    est = estimate(synthetic(tmp_path), 1024)
    plan = decide(est, Inventory((Gpu(0, "tiny", "cuda", 512 * MiB, 300 * MiB),), BIG_RAM))
    assert plan.num_gpu == 0 and plan.size_vram == 0
    assert plan.reason == "too little free GPU memory for one layer"


def test_two_gpus_prefer_one_that_fits_then_spread(tmp_path):
    est = estimate(synthetic(tmp_path, layers=10), 1024)
    layer = est.layers[0] + est.kv_per_layer
    roomy = GPU_OVERHEAD["cuda"] + est.graph_full + est.output + 10 * layer + MiB
    plan = decide(est, Inventory((Gpu(0, "a", "cuda", 8 * GiB, roomy - 2 * MiB), Gpu(1, "b", "cuda", 8 * GiB, roomy)),
                                 BIG_RAM))
    assert plan.num_gpu == 11 and plan.main_gpu == 1 and plan.tensor_split == (0.0, 11.0)
    # neither fits it alone: six layers on each, split by layer counts
    half = GPU_OVERHEAD["cuda"] + est.graph_partial + est.output + 5 * layer + 1
    plan = decide(est, Inventory((Gpu(0, "a", "cuda", 8 * GiB, half), Gpu(1, "b", "cuda", 8 * GiB, half)), BIG_RAM))
    assert plan.num_gpu == 11 and sorted(plan.tensor_split) == [5.0, 6.0]
    assert set(plan.per_gpu) == {0, 1} and plan.size_vram == sum(plan.per_gpu.values())


def test_num_gpu_override_and_main_gpu(tmp_path):
    est = estimate(synthetic(tmp_path, layers=10), 1024)
    inv = Inventory((Gpu(0, "a", "cuda", 8 * GiB, 4 * GiB), Gpu(1, "b", "cuda", 8 * GiB, 4 * GiB)), BIG_RAM)
    plan = decide(est, inv, num_gpu=6, main_gpu=1)
    assert plan.num_gpu == 6 and sum(plan.tensor_split) == 6 and plan.main_gpu == 1
    assert decide(est, inv, num_gpu=99).num_gpu == 11  # capped at block_count + 1
    assert decide(est, Inventory((), BIG_RAM), num_gpu=5).num_gpu == 0  # nothing to offload to


def test_model_that_fits_nowhere_names_required_and_available(tmp_path):
    est = estimate(synthetic(tmp_path), 1024)
    with pytest.raises(OllamaError) as exc:
        decide(est, Inventory((), 1 * MiB))
    assert exc.value.status == 500
    assert exc.value.message.startswith("model requires more system memory (")
    assert exc.value.message.endswith("than is available (1.0 MiB)")
    # the same model fits once a GPU takes most of it
    big = Gpu(0, "g", "cuda", 80 * GiB, 79 * GiB)
    assert decide(est, Inventory((big,), est.cpu_only + 1)).num_gpu == est.n_layers + 1


def test_estimate_counts_a_unified_cache_by_its_cells(tmp_path):
    info = synthetic(tmp_path)
    per_cell = 64 * 2 * 2  # K and V of one token in one layer
    assert estimate(info, 1024, parallel=32, kv_cells=5000).kv_per_layer == per_cell * 5000
    assert estimate(info, 1024, parallel=32).kv_per_layer == per_cell * 1024 * 32
    unified = RunnerSpec(model_path="m", num_ctx=1024, parallel=32, kv_unified=True, kv_size=5000)
    split = RunnerSpec(model_path="m", num_ctx=1024, parallel=32)
    planner = Planner(lambda: Inventory((), BIG_RAM), reader=lambda path: info)
    assert planner.plan(split).size - planner.plan(unified).size == 4 * per_cell * (1024 * 32 - 5000)


async def test_planner_resolves_the_spec_and_reports_sizes(smollm2_gguf):
    inv = Inventory((Gpu(0, "H100", "cuda", 80 * GiB, 79 * GiB),), BIG_RAM)
    spec = RunnerSpec(model_path=str(smollm2_gguf), num_ctx=2048, parallel=2, num_gpu=-1)
    start, info = await Planner(lambda: inv)(spec, {"name": "m"})
    assert start.num_gpu == 31 and start.tensor_split == () and spec.num_gpu == -1
    assert info["size"] > info["size_vram"] > os.path.getsize(smollm2_gguf) // 2  # token_embd stays behind
    cpu, info = await Planner(lambda: Inventory((), BIG_RAM))(spec, {"name": "m"})
    assert cpu.num_gpu == 0 and info["size_vram"] == 0 and info["size"] > 0
    with pytest.raises(OllamaError, match="model requires more system memory"):
        await Planner(lambda: Inventory((), 10 * MiB))(spec, {})


def test_runner_command_passes_the_gpu_split():
    cmd = runner_command(RunnerSpec("m.gguf", 2048, 1, num_gpu=20, main_gpu=1, tensor_split=(12.0, 8.0)))
    assert cmd[cmd.index("--gpu-layers") + 1] == "20"
    assert cmd[cmd.index("--main-gpu") + 1] == "1" and cmd[cmd.index("--tensor-split") + 1] == "12,8"
    assert "--tensor-split" not in runner_command(RunnerSpec("m.gguf", 2048, 1, num_gpu=-1))


def test_device_parsers_and_backends(tmp_path):
    gpus = devices.parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559, 80000\n1, NVIDIA H100, 81559, 1024\n")
    assert gpus[0] == Gpu(0, "NVIDIA H100 80GB HBM3", "cuda", 81559 * MiB, 80000 * MiB) and gpus[1].free == GiB
    assert devices.parse_nvidia_smi("No devices were found\n") == []
    rocm = devices.parse_rocm_smi('{"card0": {"VRAM Total Memory (B)": "1000", "VRAM Total Used Memory (B)": "400",'
                                  ' "Card series": "MI300X"}, "system": {}}')
    assert rocm == [Gpu(0, "MI300X", "rocm", 1000, 600)]
    (tmp_path / "libggml-cuda.so").touch()
    (tmp_path / "libggml-cpu.so").touch()
    assert devices.backends(tmp_path) == {"cuda"}
    assert devices.backends(tmp_path / "missing") == set()


async def _daemon(aiohttp_client, tmp_path, inventory):
    from tests.fakes import FakeFactory
    from tests.test_api_fake import create

    from ollamalike.server.app import create_app

    factory = FakeFactory()
    client = await aiohttp_client(create_app(tmp_path / "models", spawn=factory, parallel=2, inventory=inventory))
    await create(client, tmp_path)
    return client, factory


async def test_ps_reports_the_offload_and_the_runner_gets_it(aiohttp_client, tmp_path):
    inv = Inventory((Gpu(0, "a", "cuda", 80 * GiB, 70 * GiB), Gpu(1, "b", "cuda", 80 * GiB, 79 * GiB)), BIG_RAM)
    client, factory = await _daemon(aiohttp_client, tmp_path, lambda: inv)
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert r.status == 200
    spec = factory.spawned[0].spec
    assert spec.num_gpu == 3 and spec.tensor_split == (0.0, 3.0) and spec.main_gpu == 1
    ps = (await (await client.get("/api/ps")).json())["models"][0]
    assert ps["size"] > ps["size_vram"] > 0  # the token embeddings stay in RAM
    # a second request reuses the runner although the requested spec says num_gpu -1 (auto)
    await client.post("/api/generate", json={"model": "tiny", "prompt": "y", "stream": False})
    assert len(factory.spawned) == 1
    # num_gpu 0 is another load: CPU only
    await client.post("/api/generate", json={"model": "tiny", "prompt": "y", "stream": False,
                                             "options": {"num_gpu": 0}})
    assert factory.spawned[-1].spec.num_gpu == 0
    assert (await (await client.get("/api/ps")).json())["models"][0]["size_vram"] == 0


async def test_model_that_fits_nowhere_is_a_500_before_any_load(aiohttp_client, tmp_path):
    client, factory = await _daemon(aiohttp_client, tmp_path, lambda: Inventory((), 1024))
    r = await client.post("/api/generate", json={"model": "tiny", "prompt": "x"})
    assert r.status == 500
    assert (await r.json())["error"].startswith("model requires more system memory (")
    assert factory.spawned == []


def test_sched_spread_and_gpu_overhead(tmp_path, monkeypatch):
    est = estimate(synthetic(tmp_path, layers=10), 1024)
    layer = est.layers[0] + est.kv_per_layer
    roomy = GPU_OVERHEAD["cuda"] + est.graph_full + est.output + 10 * layer + MiB
    inv = Inventory((Gpu(0, "a", "cuda", 8 * GiB, roomy), Gpu(1, "b", "cuda", 8 * GiB, roomy)), BIG_RAM)
    assert decide(est, inv).tensor_split == (11.0, 0.0)  # one GPU takes it all
    spread = decide(est, inv, spread=True)
    assert spread.num_gpu == 11 and all(x > 0 for x in spread.tensor_split)
    fewer = decide(est, inv, extra_overhead=roomy - GPU_OVERHEAD["cuda"] - est.graph_partial - est.output - 2 * layer)
    assert 0 < fewer.num_gpu < 11  # the reserved VRAM is not used
    # the daemon's settings reach the decision
    spec = RunnerSpec(model_path="m.gguf", num_ctx=1024, parallel=1)
    planner = Planner(lambda: inv, reader=lambda path: synthetic(tmp_path, layers=10))
    monkeypatch.setenv("OLLAMALIKE_SCHED_SPREAD", "1")
    assert all(x > 0 for x in planner.plan(spec).tensor_split)
    monkeypatch.delenv("OLLAMALIKE_SCHED_SPREAD")
    monkeypatch.setenv("OLLAMA_GPU_OVERHEAD", str(80 * GiB))  # the OLLAMA_ fallback: nothing fits
    assert planner.plan(spec).num_gpu == 0


def test_visible_devices_filter_and_renumber():
    gpus = [Gpu(0, "a", "cuda", 8 * GiB, 8 * GiB), Gpu(1, "b", "cuda", 16 * GiB, 16 * GiB),
            Gpu(2, "c", "cuda", 24 * GiB, 24 * GiB)]
    assert devices.visible(gpus, None) == gpus
    assert [(g.index, g.name) for g in devices.visible(gpus, "2,0")] == [(0, "c"), (1, "a")]
    assert devices.visible(gpus, "") == [] and devices.visible(gpus, "-1") == []
    assert [g.name for g in devices.visible(gpus, "1,-1,2")] == ["b"]  # stops at an invalid ordinal


def test_default_context_length_by_gpu_memory():
    tiers = [((), 4096), ((Gpu(0, "a", "cuda", 16 * GiB, 1),), 4096), ((Gpu(0, "a", "cuda", 24 * GiB, 1),), 32768),
             ((Gpu(0, "a", "cuda", 24 * GiB, 1), Gpu(1, "b", "cuda", 24 * GiB, 1)), 262144)]
    for gpus, want in tiers:
        assert devices.default_context_length(Inventory(gpus, BIG_RAM)) == want


async def test_daemon_default_context_comes_from_the_inventory(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.delenv("OLLAMALIKE_CONTEXT_LENGTH", raising=False)
    monkeypatch.delenv("OLLAMA_CONTEXT_LENGTH", raising=False)
    inv = Inventory((Gpu(0, "a", "cuda", 40 * GiB, 39 * GiB),), BIG_RAM)
    client, factory = await _daemon(aiohttp_client, tmp_path, lambda: inv)
    assert (await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})).status == 200
    assert factory.spawned[0].spec.num_ctx == 2048  # 32768 from the 40 GiB GPU, clamped to the model's 2048
    monkeypatch.setenv("OLLAMALIKE_CONTEXT_LENGTH", "1024")
    await client.post("/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert factory.spawned[-1].spec.num_ctx == 1024


def test_a_lora_adapter_counts_in_its_layers_and_reaches_the_runner(tmp_path):
    from tests.loragguf import write_lora

    info = synthetic(tmp_path)
    shape = {"n_layers": 4, "shapes": {"attn_q": (256, 1024)}}
    adapter = read_gguf(write_lora(tmp_path / "lora.gguf", rank=8, shape=shape, targets=("attn_q",)))
    plain, adapted = estimate(info, 1024), estimate(info, 1024, adapters=(adapter,))
    per_layer = 4 * (8 * 256 + 1024 * 8)  # F32 lora_a [256, 8] and lora_b [8, 1024]
    assert [b - a for a, b in zip(plain.layers, adapted.layers)] == [per_layer] * 4
    assert adapted.weights - plain.weights == 4 * per_layer
    planner = Planner(lambda: Inventory(ram_free=BIG_RAM))
    model = write(tmp_path, make_gguf([("general.architecture", 8, "llama"), ("llama.block_count", 4, 4)],
                                      [(t.name, t.shape, t.ggml_type, 0) for t in info.tensors]), "model.gguf")
    spec = RunnerSpec(model_path=str(model), num_ctx=1024, parallel=1)
    with_lora = RunnerSpec(model_path=str(model), num_ctx=1024, parallel=1, adapters=(str(tmp_path / "lora.gguf"),))
    assert planner.plan(with_lora).size - planner.plan(spec).size == 4 * per_layer
    cmd = runner_command(with_lora)
    assert cmd[cmd.index("--lora") + 1] == str(tmp_path / "lora.gguf") and "--lora" not in runner_command(spec)


def test_a_draft_model_counts_in_the_estimate(tmp_path):
    infos = {"m.gguf": synthetic(tmp_path, layers=10), "d.gguf": synthetic(tmp_path, layers=2)}
    planner = Planner(lambda: Inventory(ram_free=BIG_RAM), reader=lambda path: infos[path])
    spec = RunnerSpec(model_path="m.gguf", num_ctx=1024, parallel=2)
    drafted = RunnerSpec(model_path="m.gguf", num_ctx=1024, parallel=2, draft="d.gguf")
    d = estimate(infos["d.gguf"], 1024, 2, 512)
    assert planner.plan(drafted).size - planner.plan(spec).size == d.weights + d.kv + d.graph_full > 0
