"""Training throughput: our loop (decode + augment + DataLoader + train_one_epoch) vs the model's bare
forward+backward+step on the same images pre-loaded as tensors. The ratio is the data pipeline's cost.

    .venv/bin/python benchmarks/train.py [--arch fasterrcnn_mobilenet_v3_large_320_fpn] [--n 16] [--max-dim 320]
"""
import argparse, tempfile, time
from pathlib import Path
import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    p.add_argument("--n", type=int, default=16, help="synthetic images")
    p.add_argument("--max-dim", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    from trailnb.core import get_device, seed_everything
    from trailnb.data import load_coco
    try:
        from trailnb.synthetic import make_synthetic_dataset
        from trailnb.torchdata import TorchDetectionDataset
    except ImportError:  # an older trailnb (before the synthetic world and the torch dataset left trailnb.data)
        from trailnb.data import make_synthetic_dataset, TorchDetectionDataset
    from trailnb.models import build_detector
    from trailnb.train import TrainConfig, make_loader, make_optimizer, train_one_epoch
    device = get_device(a.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    ds = load_coco(make_synthetic_dataset(tmp, n=a.n, size=(int(a.max_dim * 4 / 3) * 2, a.max_dim * 2), seed=0))
    cfg = TrainConfig(arch=a.arch, max_dim=a.max_dim, batch_size=a.batch_size, workers=a.workers, lr=0.005)
    seed_everything(0)
    det = build_detector(a.arch, ds.classes, max_dim=a.max_dim, device=device)
    opt = make_optimizer(det.model, cfg)
    tds = TorchDetectionDataset(ds, a.max_dim, train=True)
    loader = make_loader(tds, cfg, train=True, generator=torch.Generator().manual_seed(0))
    # pre-loaded tensors: the same images decoded once, no augmentation
    pre = [TorchDetectionDataset(ds, a.max_dim, train=False)[i] for i in range(len(ds))]
    batches = [pre[i:i + a.batch_size] for i in range(0, len(pre), a.batch_size)]

    def bare_epoch():
        det.train()
        for b in batches:
            loss = sum(det.losses([x for x, _ in b], [t for _, t in b]).values())
            opt.zero_grad(); loss.backward(); opt.step()

    def sync():
        if device.type == "cuda": torch.cuda.synchronize()

    bare_epoch(); sync()  # warm-up (allocator, first-call overheads)
    t = time.perf_counter(); bare_epoch(); sync(); t_bare = time.perf_counter() - t
    t = time.perf_counter(); train_one_epoch(det, opt, loader, device, 0, progress=False); sync(); t_loop = time.perf_counter() - t
    n = len(ds)
    print(f"{a.arch} @ {a.max_dim}px, batch {a.batch_size}, {n} images, workers={a.workers}, device={device}, "
          f"torch threads={torch.get_num_threads()}")
    print(f"  bare forward+backward on pre-loaded tensors: {n / t_bare:6.2f} img/s")
    print(f"  trailnb loop (decode+augment+loader+step):   {n / t_loop:6.2f} img/s")
    print(f"  ratio loop / bare: {t_bare / t_loop:.2f}x throughput (data pipeline overhead {100 * (t_loop / t_bare - 1):+.0f}%)")


if __name__ == "__main__":
    main()
