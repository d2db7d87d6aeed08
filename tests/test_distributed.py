"""torch.distributed with real processes (gloo on CPU, 2 ranks, tiny tensors): DDP with batch b per rank trains as
one process with batch 2b, the ranks agree, shards gather back in order, torchrun launches `python -m trailnb`."""
import json, os, socket, sys
from pathlib import Path
import pytest
import torch
import torch.multiprocessing as mp

WORLD, B, STEPS, N = 2, 3, 4, 24  # 24 images: 4 global batches of 6 per epoch (an uneven last batch would be
# weighted differently: DDP averages the ranks' mean losses)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=g)
    return torch.utils.data.TensorDataset(x, (x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))[:, None])


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _loader(batch_size, gen):
    "The one-process training loader: random order from `gen`, batches of `batch_size` (as trailnb.train.make_loader)."
    return torch.utils.data.DataLoader(_data(), batch_size=batch_size, sampler=torch.utils.data.RandomSampler(range(N), generator=gen))


def _train(model, loader, lr, steps, epoch_start=None):
    "`steps` SGD steps of mean squared error; `epoch_start(epoch)` before each pass over the loader."
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    done, epoch = 0, 0
    while done < steps:
        epoch_start(epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            done += 1
            if done == steps: break
        epoch += 1
    return model


def _refuse(rank):
    from trailnb.core import ConfigError
    raise ConfigError(f"refused on rank {rank}")


def _worker(rank, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from trailnb.core import ConfigError
    from trailnb.distributed import (all_gather_object, broadcast_object, cleanup, distributed_loader, gather_batches,
                                     gather_shards, init_distributed, run_on_main, scale_lr, set_epoch, shard_batches,
                                     shard_items)
    info = init_distributed("cpu")
    try:
        gen = torch.Generator()
        loader = distributed_loader(_loader(B, gen), info, gen, seed=0)
        # lr 0.05 is tuned for one process with batch B; scaled for the global batch of WORLD * B
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        _train(ddp, loader, scale_lr(0.05, info.world_size), 2 * STEPS, lambda e: set_epoch(loader, e))
        params = torch.cat([p.detach().flatten() for p in ddp.module.parameters()])
        g9 = torch.Generator()  # 9 items in batches of 2: 5 batches, so rank 1 repeats one to keep in step
        odd = distributed_loader(torch.utils.data.DataLoader(list(range(9)), batch_size=2,
                                 sampler=torch.utils.data.RandomSampler(range(9), generator=g9)), info, g9, seed=1)
        res = {"rank": info.rank, "world": info.world_size, "backend": info.backend, "is_main": info.is_main,
               "params": params.tolist(), "all_params": [p.tolist() for p in all_gather_object(params)],
               "batches": len(loader), "odd": [b.tolist() for b in odd],
               "name": broadcast_object(f"from-{info.rank}"),
               "gathered": gather_shards(shard_items(list(range(7)), info.rank, info.world_size))}
        res["batched"] = gather_batches([f"p{i}" for i in shard_batches(7, 2, info.rank, info.world_size)], 2)
        try: run_on_main(_refuse, info.rank)
        except ConfigError as e: res["error"] = str(e)
        Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    finally: cleanup()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_process_group_and_collectives(ranks):
    assert [(r["rank"], r["world"], r["backend"], r["is_main"]) for r in ranks] == [(0, 2, "gloo", True), (1, 2, "gloo", False)]
    assert [r["name"] for r in ranks] == ["from-0", "from-0"]  # rank 0 decides
    assert [r["batches"] for r in ranks] == [4, 4]  # 24 images in batches of 3: 8 batches, 4 per rank
    # 5 batches of 9 items: 3 per rank, every item in one, and the first batch repeated by rank 1
    odd = ranks[0]["odd"] + ranks[1]["odd"]
    assert [len(r["odd"]) for r in ranks] == [3, 3] and odd[-1] == odd[0]
    assert sorted(i for b in odd[:-1] for i in b) == list(range(9))
    for r in ranks:
        assert r["gathered"] == list(range(7))  # 7 items sharded and gathered: each once, in order
        assert r["batched"] == [f"p{i}" for i in range(7)]  # whole batches of 2 sharded and gathered
        assert r["error"] == "refused on rank 0"  # rank 0's error, raised on every rank


def test_ddp_equals_one_process_with_the_global_batch(ranks):
    "8 DDP steps (2 epochs) with batch 3 on each of 2 ranks == 8 one-process steps with batch 6, same data order."
    from trailnb.distributed import epoch_seed
    p0, p1 = (torch.tensor(r["params"]) for r in ranks)
    assert torch.equal(p0, p1)  # DDP keeps the ranks identical (bit for bit)
    assert torch.equal(torch.tensor(ranks[0]["all_params"][1]), p1)
    gen = torch.Generator()
    one = _train(_model(), _loader(WORLD * B, gen), 0.05 * WORLD, 2 * STEPS, lambda e: gen.manual_seed(epoch_seed(0, e)))
    ref = torch.cat([p.detach().flatten() for p in one.parameters()])
    # the same arithmetic up to the order of float additions (gradient all-reduce): 1e-5 relative is generous
    torch.testing.assert_close(p0, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ref, torch.cat([p.detach().flatten() for p in _model().parameters()]))  # it did train


def test_torchrun_launches_python_m_trailnb(capfd):
    "`launch_torchrun` runs `python -m torch.distributed.run --standalone ... -m trailnb ARGS` and waits for it."
    from trailnb.distributed import launch_torchrun
    assert launch_torchrun(2, ["--version"]) == 0
    assert capfd.readouterr().out.count("trailnb ") == 2


def test_merge_refuses_a_shard_of_another_run(tmp_path):
    from trailnb.core import ConfigError, Detections
    from trailnb.distributed import merge_shards, shard_checkpoint, shard_checkpoints, shard_items
    from trailnb.infer import ResultsLog
    from trailnb.results import ImageResult
    files = [f"cam{i % 3}/img{i}.jpg" for i in range(7)]
    for r, sig in enumerate([{"model": "a.pt"}, {"model": "b.pt"}]):
        log = ResultsLog(shard_checkpoint(tmp_path, r), sig)
        for f in shard_items(files, r, 2): log.add(ImageResult(f, 8, 8, Detections.empty()))
        log.close()
    assert [p.name for p in shard_checkpoints(tmp_path)] == ["checkpoint.rank0.jsonl", "checkpoint.rank1.jsonl"]
    with pytest.raises(ConfigError, match="different settings"): merge_shards(shard_checkpoints(tmp_path), {"model": "a.pt"})
    assert sorted(merge_shards(shard_checkpoints(tmp_path)[:1], {"model": "a.pt"})) == sorted(files[0::2])
