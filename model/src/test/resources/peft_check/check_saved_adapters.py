"""Loads adapters that Orbit saved (adapter_config.json + adapter_model.safetensors) with peft onto
the fixture models and compares peft's logits with Orbit's. Usage:
    python3 check_saved_adapters.py FIXTURES_HF_DIR EXPORT_DIR OUT_JSON
where EXPORT_DIR holds <arch>/adapter/ and <arch>/ours.safetensors written by
org.orbitrl.model.bench.ExportAdaptersForPeft."""
import json, sys
import torch, transformers, peft
from safetensors.torch import load_file

hf, export, out = sys.argv[1], sys.argv[2], sys.argv[3]
result = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__, "models": {}}
for arch in ["qwen3", "qwen3_moe"]:
    base = transformers.AutoModelForCausalLM.from_pretrained(f"{hf}/{arch}", dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, f"{export}/{arch}/adapter")
    model.eval()
    ours = load_file(f"{export}/{arch}/ours.safetensors")
    with torch.no_grad():
        logits = model(input_ids=ours["input_ids"]).logits
    diff = (logits - ours["logits"]).abs().max().item()
    with torch.no_grad():
        with model.disable_adapter():
            base_logits = model(input_ids=ours["input_ids"]).logits
    effect = (logits - base_logits).abs().max().item()
    result["models"][arch] = {"max_abs_logit_diff": diff, "adapter_effect_max_abs": effect,
                              "loaded_tensors": len(load_file(f"{export}/{arch}/adapter/adapter_model.safetensors"))}
    print(arch, result["models"][arch], flush=True)
json.dump(result, open(out, "w"), indent=1)
