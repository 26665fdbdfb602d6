#!/usr/bin/env python3
"""PyTorch peer for AttentionMmaBench, run on the same GPU in the same call (run-attention-bench).

Times torch.nn.functional.scaled_dot_product_attention with the flash backend, bf16, is_causal,
one sequence (batch 1), forward alone and forward + backward (CUDA events, median of repeats after
warm-up), at the bench's shapes. The flash backend takes neither a sliding window nor sinks, so the
gpt-oss-shaped row is plain causal attention over the whole sequence (more work than the window):
compare its TFLOP/s, not its time.
Writes OUT_DIR/peer-attention.txt: one line per shape, "T Hq Hkv D fwd_ms fwdbwd_ms backend".
Usage: peer_attention.py OUT_DIR
"""
import os
import sys
import torch
import torch.nn.functional as F

dev = torch.device("cuda")
SHAPES = [(2048, 32, 4, 128), (2048, 64, 8, 64)]  # T, Hq, Hkv, D


def time_ms(fn, reps=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def shape(t, hq, hkv, d):
    g = torch.Generator(device=dev)
    g.manual_seed(0)
    q = torch.randn(1, hq, t, d, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16, generator=g)
    dout = torch.randn(1, hq, t, d, device=dev, dtype=torch.bfloat16, generator=g)
    backend = "flash, enable_gqa"
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            kk = k.clone().requires_grad_()
            vv = v.clone().requires_grad_()
            kw = {"enable_gqa": True}
            F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **kw)
        except (RuntimeError, TypeError):
            # the flash backend without GQA: kv heads repeated beforehand (outside the timing)
            kk = k.repeat_interleave(hq // hkv, dim=1).requires_grad_()
            vv = v.repeat_interleave(hq // hkv, dim=1).requires_grad_()
            backend = "flash, kv heads repeated"
            kw = {}

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **kw)

        def fwdbwd():
            o = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **kw)
            o.backward(dout)
            q.grad = None
            kk.grad = None
            vv.grad = None

        f = time_ms(fwd)
        fb = time_ms(fwdbwd)
    pairs = t * (t + 1) / 2
    tf = 4.0 * d * hq * pairs / (f * 1e9)
    tb = 10.0 * d * hq * pairs / ((fb - f) * 1e9)
    print(f"torch sdpa bf16 causal T={t} Hq={hq} Hkv={hkv} D={d} ({backend}): forward {f:.3f} ms ({tf:.0f} TFLOP/s), "
          f"forward + backward {fb:.3f} ms (backward {fb - f:.3f} ms, {tb:.0f} TFLOP/s)", flush=True)
    return f"{t} {hq} {hkv} {d} {f:.6f} {fb:.6f} {backend.replace(' ', '_')}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
    lines = [shape(*s) for s in SHAPES]
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "peer-attention.txt"), "w") as fo:
            fo.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
