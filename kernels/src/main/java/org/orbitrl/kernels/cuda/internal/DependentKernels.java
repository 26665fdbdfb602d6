package org.orbitrl.kernels.cuda.internal;

import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * The kernels that may be launched as programmatic dependents of the kernel before them on the
 * stream: those of a decode step, each of which calls {@code pdl_enter()} ({@code common.cuh}, or
 * {@code pdl_enter_early()}, its trigger first) as the first statement of its body, before it reads or
 * writes global memory; the prologue kernels ({@link #prologues}) read only frozen weights before it.
 * Listing a kernel here whose body does not start so would let it read its predecessor's output before
 * that is written; {@code DependentKernelsSourceTest} checks every entry against the sources.
 */
final class DependentKernels {
    /** "file/name" of every kernel that waits for its predecessor. */
    private static final Set<String> NAMES = names();

    private DependentKernels() {
    }

    /**
     * The listed kernels that read frozen weights before their {@code pdl_enter()} (their prologue: those loads overlap
     * the kernels before them), by "file/name", with the parameters they may read there: pointers to weights that no
     * step writes, and these stated exceptions: {@code qgemv_down_combine_pre_int4}'s expert ids (and {@code
     * qgemv_down_combine_pre_pk_int4}'s router logits, which it chooses them from), which the router wrote
     * before the gate/up launch over them, whose blocks wait for the router before they let any later launch start (its
     * host takes it only soon after that launch; it reads them past L1). {@code DependentKernelsSourceTest} checks that
     * nothing else is named before the wait and that the ids are read with {@code __ldcg}.
     */
    private static final Map<String, Set<String>> PROLOGUES = Map.ofEntries(
            Map.entry("bgemv/bgemv_pre1", Set.of("w")),
            Map.entry("bgemv/bgemv_pre1_xs", Set.of("w")),
            Map.entry("bgemv/bgemv_norm_pre1", Set.of("w0", "w1", "w2")),
            Map.entry("bgemv/bgemv_norm_scale_pre1", Set.of("w0", "w1", "w2")),
            Map.entry("qgemv/qgemv_down_combine_pre_int4", Set.of("ids", "codes", "scales", "zeros")),
            Map.entry("qgemv/qgemv_down_combine_pre_lt_int4", Set.of("ids", "codes", "scales", "zeros")),
            Map.entry("qgemv/qgemv_down_combine_pre_et_int4", Set.of("ids", "codes", "scales", "zeros")),
            Map.entry("qgemv/qgemv_down_combine_pre_cp_int4", Set.of("ids", "codes", "scales", "zeros")),
            Map.entry("moe/moe_router_norm_topk_pre", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("moe/moe_router_add_norm_topk_pre", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("moe/moe_router_norm_topk_rk_pre", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("moe/moe_router_add_norm_topk_rk_pre", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("moe/moe_router_add_norm_topk_rk_pre_nb", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("moe/moe_router_norm_logits_pre", Set.of("w", "nw", "a0", "a1", "a2")),
            Map.entry("qgemv/qgemv_down_combine_pre_pk_int4", Set.of("logits", "codes", "scales", "zeros")));

    /** Whether kernel {@code name} of {@code file}.cu waits for its predecessor ({@code pdl_enter()}) before it reads what that wrote. */
    static boolean waitsForPredecessor(String file, String name) {
        return NAMES.contains(file + "/" + name);
    }

    /** The prologue kernels and the parameters each reads before its wait. */
    static Map<String, Set<String>> prologues() {
        return PROLOGUES;
    }

    /** Every entry as "file/name" (for the source check). */
    static Set<String> all() {
        return NAMES;
    }

    private static Set<String> names() {
        Set<String> s = new HashSet<>();
        s.add("select/embedding_f32");
        s.add("select/argmax_f32");
        s.add("norm/rmsnorm_f32");
        s.add("norm/rmsnorm_warp_f32");
        s.add("norm/rmsnorm_v4_f32");
        s.add("norm/add_rmsnorm_v4_f32");
        s.add("norm/add_rmsnorm_v2_f32");
        s.add("elementwise/swiglu_f32");
        s.add("flash_attention/qkv_prep_f32");
        s.add("flash_attention/qkv_prep3_f32");
        s.add("flash_attention/paged_decode_f32");
        s.add("paged_decode/paged_decode_tiled_f32");
        s.add("paged_decode/paged_decode_tiled_h2_f32");
        s.add("flash_attention/qkv_prep_kvbf16");   // the same over a bf16 KV cache
        s.add("flash_attention/qkv_prep3_kvbf16");
        s.add("flash_attention/paged_decode_kvbf16");
        s.add("paged_decode/paged_decode_tiled_kvbf16");
        s.add("paged_decode/paged_decode_tiled_h2_kvbf16");
        s.add("paged_decode/paged_decode_mma_d64_kvbf16");
        s.add("paged_decode/paged_decode_mma_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma3_d64_kvbf16");
        s.add("paged_decode/paged_decode_mma3_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_merged_d64_kvbf16");   // the same merging their key splits
        s.add("paged_decode/paged_decode_mma_merged_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma3_merged_d64_kvbf16");
        s.add("paged_decode/paged_decode_mma3_merged_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_d64_kvbf16");     // the same with the step's q/k/v preparation, a cluster
        s.add("paged_decode/paged_decode_mma_prep_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qf_d64_kvbf16");  // the same, q made before the first copies
        s.add("paged_decode/paged_decode_mma_prep_qf_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qf8_d64_kvbf16"); // the same for groups of at most 8, the rope in halves
        s.add("paged_decode/paged_decode_mma_prep_qf8_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qfl_d64_kvbf16"); // the same two, each round of loads issued together
        s.add("paged_decode/paged_decode_mma_prep_qfl_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qf8l_d64_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qf8l_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma_prep_qf8p_d64_kvbf16"); // the same, the first pages read in round one
        s.add("paged_decode/paged_decode_mma_prep_qf8p_d128_kvbf16");
        s.add("paged_decode/paged_decode_mma3_prep_d64_kvbf16");
        s.add("paged_decode/paged_decode_mma3_prep_d128_kvbf16");
        s.add("attention/attention_combine");
        s.add("bgemv/bgemv_pre1");            // its weights' loads before the wait (PROLOGUES)
        s.add("bgemv/bgemv_pre1_xs");         // the same, x staged in shared memory after the wait
        s.add("bgemv/bgemv_norm_pre1");       // likewise
        s.add("bgemv/bgemv_norm_scale_pre1"); // likewise
        s.add("qgemv/qgemv_down_combine_pre_int4"); // likewise, and its expert ids (PROLOGUES)
        s.add("qgemv/qgemv_down_combine_pre_lt_int4"); // the same, its dependents let start once its act rows are staged
        s.add("qgemv/qgemv_down_combine_pre_et_int4"); // the same, its dependents let start before its wait
        s.add("qgemv/qgemv_down_combine_pre_cp_int4"); // the same, its loads after the wait as asynchronous copies
        s.add("paged_mla/paged_mla_decode_kvbf16");
        s.add("moe/moe_route");
        s.add("norm/softmax_f32");                // the router's probabilities, then their top k
        s.add("moe_train/moe_topk_warps");
        s.add("moe_train/moe_sigmoid_topk");     // DeepSeek-V3's router after its logits
        s.add("moe_train/moe_score_topk");       // DeepSeek V4's router after its logits
        s.add("moe/moe_combine");
        s.add("moe/moe_router_logits");
        s.add("moe/moe_router_topk");
        s.add("moe/moe_router_norm_topk");        // the fused decode operations (CudaFusedDecode)
        s.add("moe/moe_router_norm_topk_pre");    // its router rows' loads before the wait (PROLOGUES)
        s.add("moe/moe_router_add_norm_topk");
        s.add("moe/moe_router_add_norm_topk_pre");  // with the prologue of moe_router_norm_topk_pre (PROLOGUES)
        s.add("moe/moe_router_norm_topk_rk_pre");     // the two above with the block's selection (PROLOGUES)
        s.add("moe/moe_router_add_norm_topk_rk_pre");
        s.add("moe/moe_router_add_norm_topk_rk_pre_nb"); // the same, its norm weights loaded as bits
        s.add("moe/moe_router_norm_logits_pre");      // its logits alone, the choice left to the launches after (PROLOGUES)
        s.add("moe/moe_router_select");               // that choice, where no later launch makes it
        s.add("qgemv/qgemv_down_combine_pre_pk_int4"); // the down prologue choosing from the router's logits (PROLOGUES)
        s.add("moe/moe_router_tiles");
        s.add("bgemv/bgemv_norm1");
        s.add("bgemv/bgemv_norm_m4");
        s.add("bgemv/bgemv_norm_scale_m1");
        s.add("bgemv/bgemv_norm_scale_w1");
        s.add("moe_pairs/moe_pairs_dense");          // the per-pair decode experts (CudaMoePairs)
        s.add("moe_pairs/moe_pairs_dense_r1");
        s.add("moe_pairs/moe_pairs_dense_r1_cp"); // the same, x staged by asynchronous copies
        s.add("moe_pairs/moe_pairs_dense_r1x2");
        s.add("moe_pairs/moe_pairs_dense_r1x2_cp"); // the same, x staged by asynchronous copies
        s.add("moe_pairs/moe_routed_dense_r1");
        s.add("moe_pairs/moe_routed_dense_r4");
        s.add("moe_pairs/moe_routed_dense_k");
        s.add("moe_pairs/moe_routed_dense");
        s.add("moe_pairs/moe_routed_dense_a");
        s.add("moe_pairs/moe_routed_dense_a2");
        s.add("moe_pairs/moe_routed_tc_a");
        s.add("moe_pairs/moe_routed_tc_a2");
        s.add("moe_pairs/moe_routed_tcp_a");
        s.add("moe_pairs/moe_routed_tcp_a2");
        s.add("moe_pairs/narrow_matmul_f32");       // a LoRA's A over a decode batch (CudaMatmulOps)
        s.add("moe_pairs/narrow_matmul3_f32");      // q's, k's and v's in one launch
        s.add("dmma/dmma_bf16_m32_f32");            // a decode batch's dense products and LoRA terms on tensor cores
        s.add("dmma/dmma_bf16_m64_f32");
        s.add("dmma/dmma_bf16_wide_m32_f32");
        s.add("dmma/dmma_bf16_wide_m64_f32");
        for (String format : new String[]{"int4", "mxfp4", "nvfp4"}) {
            s.add("qgemv/qgemv_" + format + "_pairs_f32");
            for (int mt : new int[]{4, 8, 16}) {
                s.add("qgemv/qgemv_" + format + "_routed_m" + mt + "_f32");
            }
            s.add("qgemv/qgemv_swiglu_" + format);
            s.add("qgemv/qgemv_swiglu_r2_" + format);
            s.add("qgemv/qgemv_down_combine_" + format);
            s.add("qgemv/qgemv_swiglu_lora_" + format);
            s.add("qgemv/qgemv_swiglu_lora_r6_" + format);
            s.add("qgemv/qgemv_swiglu_lora_xf_" + format);
            s.add("qgemv/qgemv_swiglu_lora_r6_xf_" + format);
            s.add("qgemv/qgemv_swiglu_lora_xfl_" + format);
            s.add("qgemv/qgemv_swiglu_lora_r6_xfl_" + format);
            s.add("qgemv/qgemv_swiglu_lora_xf_pk_" + format);
            s.add("qgemv/qgemv_swiglu_lora_r6_xf_pk_" + format);
            s.add("qgemv/qgemv_down_combine_lora_" + format);
        }
        String[] xs = {"f32", "bf16"};
        for (int mt : new int[]{1, 4, 8, 16}) {
            s.add("bgemv/bgemv_m" + mt);
            s.add("bgemv/bgemv_lr_m" + mt);
            s.add("bgemv/bgemv_lra_m" + mt);
            if (mt == 1) {
                s.add("bgemv/bgemv_norm_lr_m" + mt);
            }
            for (String format : new String[]{"int4", "mxfp4", "nvfp4"}) {
                for (String x : xs) {
                    s.add("qgemv/qgemv_" + format + "_m" + mt + "_" + x);
                }
            }
        }
        for (String x : xs) {
            for (int mt : new int[]{8, 16, 32}) {
                s.add("qmma/qmma_int4_grouped_m" + mt + "_" + x);
                s.add("qmma/qmma_int4_grouped_after_m" + mt + "_" + x);
                s.add("qmma/qmma_int4_gate_up_m" + mt + "_" + x);
            }
            s.add("qmma/qmma_int4_grouped_short_m8_" + x);
            s.add("qmma/qmma_int4_grouped_short4_m8_" + x);
            s.add("qmma/qmma_int4_grouped_st2_m8_" + x);
            for (int mt : new int[]{8, 16, 32}) {
                s.add("qmma/qmma_mxfp4_grouped_m" + mt + "_" + x);
                s.add("qmma/qmma_mxfp4_grouped_after_m" + mt + "_" + x);
            }
            s.add("qmma/qmma_mxfp4_grouped_short_m8_" + x);
            s.add("qmma/qmma_mxfp4_grouped_short4_m8_" + x);
            s.add("qmma/qmma_mxfp4_grouped_st2_m8_" + x);
            s.add("qmma/qmma_int4_gate_up3_m8_" + x);
            s.add("qmma/qmma_int4_gate_up_st2_m16_" + x);
        }
        for (int mt : new int[]{8, 16, 32}) {             // with LoRA terms (f32 x only)
            s.add("qmma/qmma_int4_gate_up_lora_m" + mt + "_f32");
            s.add("qmma/qmma_int4_grouped_lora_after_m" + mt + "_f32");
        }
        s.add("qmma/qmma_int4_gate_up_lora_st2_m16_f32");
        s.add("qmma/qmma_int4_grouped_lora_short_m8_f32");
        s.add("qmma/qmma_int4_grouped_lora_short4_m8_f32");
        s.add("qmma/qmma_int4_gate_up_lora3_m8_f32");
        return Set.copyOf(s);
    }
}
