package org.orbitrl.tools;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.checkpoint.SafetensorsWriter;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code orbit score}: logits and per-token log-probs of given token ids, for checking against another implementation. */
@Command(name = "score", mixinStandardHelpOptions = true,
        description = "Reads input_ids [B,T] (int64) from a safetensors file; writes logits [B,T,V] f32 and "
                + "token_logprobs [B,T-1] f32 (log p(ids[b,t+1] | ids[b,:t+1])).")
final class ScoreCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, description = "Hugging Face model directory (config.json + safetensors)")
    Path model;

    @Option(names = "--tokens", required = true, description = "safetensors file holding input_ids [B,T] int64")
    Path tokens;

    @Option(names = "--out", required = true, description = "safetensors file to write")
    Path out;

    @Option(names = "--adapter", description = "PEFT adapter directory to apply")
    Path adapter;

    @Option(names = "--base-format", defaultValue = "bf16", description = "bf16 | int4 | mxfp4 | nvfp4 (default ${DEFAULT-VALUE})")
    String baseFormat;

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu | scalar | cuda | cuda:N (default ${DEFAULT-VALUE})")
    String backendName;

    @Override
    public Integer call() throws Exception {
        try (Backend backend = Backends.named(backendName);
             LoadedModel lm = LoadedModel.load(model, backend, BaseFormat.parse(baseFormat));
             Checkpoint in = Checkpoint.open(tokens)) {
            if (adapter != null) {
                lm.loadAdapter(adapter);
            }
            if (!in.has("input_ids")) {
                throw new IllegalArgumentException(tokens + ": no tensor named input_ids");
            }
            Tensor ids = in.tensor("input_ids");
            if (ids.rank() != 2 || (ids.dtype() != DType.I64 && ids.dtype() != DType.I32)) {
                throw new IllegalArgumentException(tokens + ": input_ids must be int64 [B, T], got " + ids);
            }
            int b = ids.size(0);
            int t = ids.size(1);
            CausalLM m = lm.model();
            if (t > lm.spec().maxPositionEmbeddings()) {
                throw new IllegalArgumentException(tokens + ": input_ids [" + b + ", " + t + "] has " + t + " positions a row; "
                        + GenerateCommand.configOf(lm) + " allows max_position_embeddings " + lm.spec().maxPositionEmbeddings());
            }
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int i = 0; i < b; i++) {
                int[] s = new int[t];
                for (int j = 0; j < t; j++) {
                    long id = ids.getLong(i, j);
                    if (id < 0 || id >= m.vocabSize()) {
                        throw new IllegalArgumentException(tokens + ": input_ids[" + i + "," + j + "] = " + id
                                + " is outside the vocabulary [0, " + m.vocabSize() + ")");
                    }
                    s[j] = (int) id;
                }
                batch.add(new CausalLM.Segment(s, null));
            }
            Tensor logits = m.forward(batch);                 // [B*T, V]
            int v = m.vocabSize();
            float[] lp = new float[b * Math.max(0, t - 1)];
            var alloc = backend.allocator();
            Tensor onBackend = alloc.allocate(org.orbitrl.kernels.MemoryCategory.LOGITS, DType.F32, (long) b * t, v);
            alloc.copy(logits, onBackend);
            backend.logSoftmax(onBackend);
            Tensor logprobs = alloc.toHost(onBackend);        // [B*T, V]
            Tensor hostLogits = alloc.toHost(logits);
            for (int i = 0; i < b; i++) {
                for (int j = 0; j + 1 < t; j++) {
                    lp[i * (t - 1) + j] = logprobs.getFloat((long) i * t + j, batch.get(i).tokens()[j + 1]);
                }
            }
            new SafetensorsWriter().metadata("format", "pt")
                    .add("logits", hostLogits.reshape(b, t, v))
                    .add("token_logprobs", Tensor.of(lp, b, Math.max(0, t - 1)))
                    .write(out);
            System.out.println("wrote " + out + ": logits [" + b + ", " + t + ", " + v + "], token_logprobs [" + b + ", "
                    + (t - 1) + "]");
            return 0;
        }
    }
}
