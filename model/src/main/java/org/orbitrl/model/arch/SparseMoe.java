package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

/**
 * Qwen3-MoE sparse block: a linear router, softmax over all experts, top-k, optional
 * renormalisation of the k weights, and the weighted sum of the chosen SwiGLU experts.
 * Tokens are grouped by expert so each active expert runs one batched matmul over its tokens.
 */
final class SparseMoe {
    final Linear router;     // [experts, hidden]
    final DenseMlp[] experts;
    private final int topK;
    private final boolean normTopK;

    SparseMoe(Linear router, DenseMlp[] experts, int topK, boolean normTopK) {
        this.router = router;
        this.experts = experts;
        this.topK = topK;
        this.normTopK = normTopK;
    }

    /** The routing decision for N tokens. */
    record Routing(int[] expert, float[] weight, int topK) {     // [N*k] each, token-major
    }

    Routing route(Backend b, Tensor x) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int e = experts.length;
        Tensor logits = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, e); // [N, E]
        router.forward(b, x, logits);
        b.softmax(logits);
        Tensor vals = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);  // [N, k]
        Tensor idx = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);   // [N, k]
        b.topk(logits, topK, vals, idx);
        float[] w = vals.toFloatArray();
        long[] ids = idx.toLongArray();
        int[] expert = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            expert[i] = (int) ids[i];
        }
        if (normTopK) {
            for (int t = 0; t < n; t++) {
                float sum = 0;
                for (int j = 0; j < topK; j++) {
                    sum += w[t * topK + j];
                }
                for (int j = 0; j < topK; j++) {
                    w[t * topK + j] /= sum;
                }
            }
        }
        return new Routing(expert, w, topK);
    }

    /** x [N, hidden] -> out [N, hidden]. */
    void forward(Backend b, Tensor x, Tensor out) {
        Routing r = route(b, x);
        out.fill(0);
        ExpertGroups groups = ExpertGroups.of(r.expert(), r.weight(), r.topK(), experts.length);
        TensorAllocator a = b.allocator();
        int h = x.size(1);
        for (int e = 0; e < experts.length; e++) {
            int cnt = groups.count(e);
            if (cnt == 0) {
                continue;
            }
            Tensor rows = groups.tokens(e);                                               // i32 [cnt]
            Tensor xe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);        // [cnt, hidden]
            Tensor ye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);        // [cnt, hidden]
            b.gatherRows(x, rows, xe);
            experts[e].forward(b, xe, ye);
            b.scatterAddRows(ye, rows, groups.weights(e), out);
        }
    }
}
