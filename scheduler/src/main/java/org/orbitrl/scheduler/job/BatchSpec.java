package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The shape of one step.
 *
 * @param promptsPerStep    prompts rolled out per step (groups per step)
 * @param samplesPerPrompt  samples per prompt (the group size G)
 * @param maxPromptTokens   longest prompt; longer prompts are refused when the task loads
 * @param maxResponseTokens longest response; generation stops with finish reason {@code length}
 * @param microBatch        sequences per forward/backward pass in training
 */
public record BatchSpec(int promptsPerStep, int samplesPerPrompt, int maxPromptTokens, int maxResponseTokens,
                        int microBatch) {
    public BatchSpec {
        Checks c = new Checks()
                .range("prompts_per_step", promptsPerStep, 1, 65536)
                .range("samples_per_prompt", samplesPerPrompt, 1, 1024)
                .range("max_prompt_tokens", maxPromptTokens, 1, 1 << 20)
                .range("max_response_tokens", maxResponseTokens, 1, 1 << 20)
                .range("micro_batch", microBatch, 1, 1 << 20);
        if (c.valid("prompts_per_step", "samples_per_prompt", "micro_batch")) {
            c.require((long) microBatch <= (long) promptsPerStep * samplesPerPrompt, "micro_batch",
                    "must not exceed the sequences of a step (prompts_per_step × samples_per_prompt = "
                            + (long) promptsPerStep * samplesPerPrompt + "), got " + microBatch);
        }
        c.done();
    }

    /** Sequences generated per step. */
    public int sequencesPerStep() {
        return promptsPerStep * samplesPerPrompt;
    }

    static BatchSpec read(Section s) {
        int prompts = s.integer("prompts_per_step", 8);
        int samples = s.integer("samples_per_prompt", 8);
        int maxPrompt = s.integer("max_prompt_tokens", 512);
        int maxResponse = s.integer("max_response_tokens", 256);
        int micro = s.integer("micro_batch", 8);
        return s.build(() -> new BatchSpec(prompts, samples, maxPrompt, maxResponse, micro));
    }
}
