package org.orbitrl.scheduler.loop;

import java.nio.file.Files;
import java.nio.file.Path;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;

/**
 * What the daemon checks of an RL job's base model when it accepts the job file, before the job waits for devices:
 * the model folder exists, its {@code config.json} reads as a model type Orbit knows, and its safetensors headers
 * (with the shard index, when there is one) parse and agree with each other, as loading will need them to. Reads the
 * config and each file's header only: the files are mapped, not read, and nothing is allocated on a device, so a
 * model of hundreds of GB is checked in about the time it takes to list its shards. Which tensors the architecture
 * needs, and their shapes, are checked when the job loads.
 */
final class ModelCheck {
    private ModelCheck() {
    }

    /** Throws, naming the file at fault and what was expected, unless the job's model can be read. */
    static void check(JobSpec spec) throws JobException {
        Path dir = spec.model().path();
        if (!Files.isDirectory(dir)) {
            throw new JobException("job " + spec.name() + ": model.path: " + dir
                    + (Files.exists(dir) ? " is not a folder" : ": no such folder") + "; expected the folder of a Hugging"
                    + " Face checkpoint (config.json and " + Checkpoint.SINGLE_FILE + ", or its shards listed in "
                    + Checkpoint.INDEX_FILE + ")");
        }
        try {
            ConfigLoader.load(dir);
            Checkpoint.open(dir).close();   // parses every header and the index; maps, reads no weights
        } catch (RuntimeException e) {   // ConfigException, CheckpointException: each names its file
            throw new JobException("job " + spec.name() + ": model.path: " + e.getMessage(), e);
        }
    }
}
