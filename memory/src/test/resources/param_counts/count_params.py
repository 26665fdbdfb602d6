"""Ground-truth parameter counts from Hugging Face transformers, for the memory planner's tests.

Usage (on a machine with torch and transformers; no network, no weights needed):

    python3 count_params.py CONFIG_DIR OUT.json [DETAILS.json]

CONFIG_DIR holds one sub-folder per model with its config.json (sub-folders may be nested one
level: CONFIG_DIR/models/kimi-k2.6/config.json is named "models/kimi-k2.6"). Each model is
instantiated with AutoModelForCausalLM.from_config on the meta device (no memory is allocated)
and its parameters are counted. Rules, applied exactly as written in the output's "notes":
  - a `kimi_k25` wrapper config is replaced by its `text_config`;
  - a model_type transformers does not register is mapped through ALIASES (`kimi_k2` is
    DeepSeek-V3's architecture under Moonshot's name) and the mapping is noted;
  - `quantization_config` and `auto_map` are removed before instantiation (the counts are of the
    logical, unquantized parameters; auto_map points at remote code we do not run).
Per model the output holds: total parameters (sum of numel over named_parameters(), which
de-duplicates tied weights), model.num_parameters() and its exclude_embeddings variant, buffers
that are saved with the weights (persistent buffers, e.g. a router's score-correction bias), the
total per top-level module, the total per parameter name pattern (layer and expert indices
replaced by '*'), how many decoder layers were instantiated against num_hidden_layers and
num_nextn_predict_layers (multi-token-prediction layers are not instantiated by transformers),
and the layer schedules transformers derived from the config.
"""
import gc
import json
import os
import re
import sys
import time
import traceback

import torch
import transformers
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

ALIASES = {"kimi_k2": "deepseek_v3"}
REMOVED_KEYS = ("quantization_config", "auto_map")
# Config attributes worth recording as transformers interpreted them (when present).
INTERPRETED = ("model_type", "num_hidden_layers", "num_nextn_predict_layers", "first_k_dense_replace",
               "layer_types", "mlp_layer_types", "compress_rates", "tie_word_embeddings", "head_dim",
               "qk_rope_head_dim", "partial_rotary_factor", "num_local_experts", "num_experts",
               "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "decoder_sparse_step",
               "mlp_only_layers", "hc_mult", "intermediate_size", "moe_intermediate_size", "vocab_size")


def find_configs(root):
    """(name, path) for every config.json one or two levels below root, sorted by name."""
    out = []
    for dirpath, _, files in os.walk(root):
        if "config.json" in files:
            name = os.path.relpath(dirpath, root)
            if name.count(os.sep) <= 1 and name != ".":
                out.append((name.replace(os.sep, "/"), os.path.join(dirpath, "config.json")))
    return sorted(out)


def build_config(path, notes):
    with open(path) as f:
        raw = json.load(f)
    d = raw
    if raw.get("model_type") == "kimi_k25":
        d = raw["text_config"]
        notes.append("kimi_k25 wrapper: its text_config is the language model")
    d = dict(d)
    mt = d.get("model_type")
    if mt not in CONFIG_MAPPING:
        if mt not in ALIASES:
            raise ValueError(f"model_type {mt!r} is not registered in transformers {transformers.__version__}")
        notes.append(f"model_type {mt} is not registered; instantiated as {ALIASES[mt]}")
        mt = ALIASES[mt]
    d["model_type"] = mt
    for k in REMOVED_KEYS:
        if k in d:
            del d[k]
            notes.append(f"removed {k}")
    cls = CONFIG_MAPPING[mt]
    return cls.from_dict(d), raw


def plain(v):
    """A JSON-safe copy of a config value (anything exotic becomes its string)."""
    return json.loads(json.dumps(v, default=str))


def pattern(name):
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def top_module(name):
    parts = name.split(".")
    if parts[0] == "model" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else name


def layer_index(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def count(cfg):
    t0 = time.time()
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        how = "torch.device('meta')"
    except Exception as e:  # a model whose init touches values: accelerate's empty-weights context
        from accelerate import init_empty_weights
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(cfg)
        how = f"accelerate.init_empty_weights (meta device failed: {type(e).__name__}: {e})"
    build_s = time.time() - t0
    params = list(model.named_parameters())          # de-duplicates tied weights
    total = sum(p.numel() for _, p in params)
    state_keys = set(model.state_dict().keys())
    persistent = [(n, b) for n, b in model.named_buffers() if n in state_keys]
    per_top, per_pattern = {}, {}
    for n, p in params:
        k = top_module(n)
        per_top[k] = per_top.get(k, 0) + p.numel()
        e = per_pattern.setdefault(pattern(n), {"numel": 0, "count": 0, "shapes": []})
        e["numel"] += p.numel()
        e["count"] += 1
        shape = list(p.shape)
        if shape not in e["shapes"] and len(e["shapes"]) < 4:
            e["shapes"].append(shape)
    buffers = {}
    for n, b in persistent:
        e = buffers.setdefault(pattern(n), {"numel": 0, "count": 0, "dtype": str(b.dtype), "shapes": []})
        e["numel"] += b.numel()
        e["count"] += 1
        shape = list(b.shape)
        if shape not in e["shapes"] and len(e["shapes"]) < 4:
            e["shapes"].append(shape)
    n_layers = getattr(cfg, "num_hidden_layers", None)
    layer_ids = {layer_index(n) for n, _ in params} - {None}
    beyond = sum(p.numel() for n, p in params
                 if (layer_index(n) is not None and n_layers is not None and layer_index(n) >= n_layers)
                 or "mtp" in n.lower() or "nextn" in n.lower())
    res = {
        "class": type(model).__name__,
        "total_params": total,
        "num_parameters": model.num_parameters(),
        "num_parameters_exclude_embeddings": model.num_parameters(exclude_embeddings=True),
        "persistent_buffer_numel": sum(b.numel() for _, b in persistent),
        "state_dict_numel": total + sum(b.numel() for _, b in persistent),
        "per_top_module": dict(sorted(per_top.items())),
        "instantiated_layers": len(layer_ids),
        "num_nextn_predict_layers": getattr(cfg, "num_nextn_predict_layers", None),
        "mtp_params_instantiated": beyond,
        "interpreted_config": {k: plain(getattr(cfg, k)) for k in INTERPRETED if hasattr(cfg, k)},
        "instantiated_with": how,
        "build_seconds": round(build_s, 2),
    }
    details = {"per_pattern": per_pattern, "persistent_buffers": buffers}
    del model, params, persistent
    gc.collect()
    return res, details


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    root, out_path = argv[1], argv[2]
    details_path = argv[3] if len(argv) > 3 else None
    configs = find_configs(root)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: {len(configs)} configs", flush=True)
    out = {"transformers": transformers.__version__, "torch": torch.__version__,
           "method": "AutoModelForCausalLM.from_config(cfg) under torch.device('meta'); "
                     "total_params = sum(p.numel() for p in model.parameters()) (tied weights once)",
           "models": {}}
    all_details = {}
    for name, path in configs:
        notes = []
        entry = {"notes": notes}
        try:
            cfg, _ = build_config(path, notes)
            res, det = count(cfg)
            entry.update(res)
            all_details[name] = det
            print(f"{name}: {res['class']} total={res['total_params']:,} "
                  f"buffers={res['persistent_buffer_numel']:,} layers={res['instantiated_layers']} "
                  f"({res['build_seconds']} s)", flush=True)
        except Exception as e:  # one broken config must not cost the others their counts
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            print(f"{name}: FAILED {entry['error']}", flush=True)
        out["models"][name] = entry
        with open(out_path, "w") as f:      # rewritten after each model: a timeout keeps the finished ones
            json.dump(out, f, indent=1, sort_keys=False)
        if details_path:
            with open(details_path, "w") as f:
                json.dump(all_details, f, indent=1)
    failed = [n for n, e in out["models"].items() if "error" in e]
    print(f"done; {len(configs) - len(failed)} counted, failed: {failed}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
