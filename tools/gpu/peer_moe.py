"""PyTorch peers of MoeBaseOpsBench at the Qwen3-30B-A3B training shape (131,072 grouped rows, 128
experts of 768 x 2048, bf16): one dense product of the same FLOPs, torch._grouped_mm over 128 even
groups (bf16 in and out, weights already bf16: no dequantization and no f32 rows), and the f32 -> bf16
rounding of the rows. Writes OUT_DIR/peer-moe.txt.
Usage: python3 peer_moe.py OUT_DIR"""
import os
import sys

import torch

P, H, W, E = 131072, 2048, 768, 128


def timed(f, reps=10):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    dev = "cuda"
    flops = 2.0 * P * H * W
    lines = [f"device {torch.cuda.get_device_name()}, torch {torch.__version__}"]

    def row(name, ms):
        lines.append(f"{name}: {ms:.3f} ms, {flops / ms / 1e9:.0f} TFLOP/s")

    x = torch.randn(P, H, device=dev)
    xb = x.bfloat16()
    h = torch.randn(P, W, device=dev, dtype=torch.bfloat16)
    w = torch.randn(W, H, device=dev, dtype=torch.bfloat16)
    wd = torch.randn(H, W, device=dev, dtype=torch.bfloat16)
    row("torch mm bf16 [P,2048] x [2048,768]", timed(lambda: xb @ w.t()))
    row("torch mm bf16 [P,768] x [768,2048]", timed(lambda: h @ wd.t()))
    ms = timed(lambda: x.bfloat16())
    lines.append(f"torch f32 -> bf16 [P,2048]: {ms:.3f} ms, {P * H * 6 / ms / 1e6:.0f} GB/s")
    offs = torch.arange(1, E + 1, device=dev, dtype=torch.int32) * (P // E)
    if hasattr(torch, "_grouped_mm"):
        wg = torch.randn(E, H, W, device=dev, dtype=torch.bfloat16)
        row("torch._grouped_mm [P,2048] x [E,2048,768]", timed(lambda: torch._grouped_mm(xb, wg, offs=offs)))
        del wg
        wgd = torch.randn(E, W, H, device=dev, dtype=torch.bfloat16)
        row("torch._grouped_mm [P,768] x [E,768,2048]", timed(lambda: torch._grouped_mm(h, wgd, offs=offs)))
    else:
        lines.append("torch._grouped_mm: not in this PyTorch")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "peer-moe.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
