package org.orbitrl.scheduler.job;

import java.nio.file.Path;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The frozen base model.
 *
 * @param path       folder of a Hugging Face checkpoint ({@code config.json} + safetensors); a
 *                   relative path in a job file is resolved against the job file's folder
 * @param baseFormat how routed experts are held in memory
 */
public record ModelSpec(Path path, BaseFormat baseFormat) {
    public ModelSpec {
        new Checks()
                .require(path != null && !path.toString().isBlank(), "path",
                        "is required: the folder of the base model's checkpoint (config.json and *.safetensors)")
                .require(path == null || path.toString().length() <= 4096, "path",
                        "is longer than 4096 characters, the longest path Linux opens")
                .require(baseFormat != null, "base_format", "is required")
                .done();
    }

    static ModelSpec read(Section s, Path baseDir) {
        Path path = s.path("path", baseDir);
        BaseFormat format = s.choice("base_format", BaseFormat.AUTO);
        return s.build(() -> new ModelSpec(path, format));
    }
}
