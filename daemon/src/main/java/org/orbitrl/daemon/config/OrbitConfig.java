package org.orbitrl.daemon.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.regex.Pattern;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;
import org.orbitrl.scheduler.job.yaml.Section;
import org.orbitrl.scheduler.job.yaml.Units;
import org.orbitrl.scheduler.job.yaml.YamlNode;
import org.orbitrl.scheduler.job.yaml.YamlTreeReader;

/**
 * The daemon's configuration ({@code orbit.yaml}). Relative paths resolve against the file's folder.
 *
 * @param dataDir         where the daemon keeps job state, sample logs and checkpoints
 * @param jobsDir         the folder watched for job files
 * @param devices         devices the daemon owns and gives to jobs ({@code cpu:0}, {@code cuda:0}, ...)
 * @param watch           jobs-folder watching
 * @param shutdownTimeout on SIGTERM, how long running jobs get to checkpoint before the daemon exits
 * @param maxJobs         jobs the persisted state map is sized for (finished jobs count until removed)
 * @param remoteJmx       remote JMX (off by default)
 * @param log             logging
 */
public record OrbitConfig(Path dataDir, Path jobsDir, List<String> devices, WatchConfig watch, Duration shutdownTimeout,
                          int maxJobs, RemoteJmxConfig remoteJmx, LogConfig log) {
    /** Where the daemon looks for its configuration without {@code --config}. */
    public static final Path DEFAULT_FILE = Path.of("/etc/orbit/orbit.yaml");
    private static final Pattern DEVICE = Pattern.compile("(cpu|cuda):[0-9]{1,4}");

    public OrbitConfig {
        devices = List.copyOf(devices);
        Checks c = new Checks();
        ownRules(c, dataDir, jobsDir, devices, shutdownTimeout, maxJobs);
        c.require(watch != null && remoteJmx != null && log != null, "", "every section is required");
        c.done();
    }

    /** The rules on this record's own (non-section) fields; also checked when a section is invalid. */
    private static void ownRules(Checks c, Path dataDir, Path jobsDir, List<String> devices, Duration shutdownTimeout,
                                 int maxJobs) {
        c.require(dataDir != null, "data_dir", "is required")
                .require(jobsDir != null, "jobs_dir", "is required")
                .require(!devices.isEmpty(), "devices", "must list at least one device")
                .require(shutdownTimeout.compareTo(Duration.ofSeconds(1)) >= 0
                        && shutdownTimeout.compareTo(Duration.ofHours(1)) <= 0, "shutdown_timeout",
                        "must be between 1s and 1h, got " + Units.formatDuration(shutdownTimeout))
                .range("max_jobs", maxJobs, 16, 1_000_000);
        for (int i = 0; i < devices.size(); i++) {
            c.require(DEVICE.matcher(devices.get(i)).matches(), "devices[" + i + "]",
                    "expected a device such as cpu:0 or cuda:3, got '" + devices.get(i) + "'");
        }
        c.require(new HashSet<>(devices).size() == devices.size(), "devices", "names a device twice: " + devices);
    }

    /**
     * The configuration in the file's own keys and units, on one line for the log: {@code data_dir /var/lib/orbit,
     * jobs_dir /etc/orbit/jobs.d, devices [cpu:0], watch.debounce 500ms, ..., shutdown_timeout 60s, ...}. It holds
     * no secret: the files holding passwords are named, not read.
     */
    @Override
    public String toString() {
        return "data_dir " + dataDir + ", jobs_dir " + jobsDir + ", devices " + devices + ", " + watch
                + ", shutdown_timeout " + Units.formatDuration(shutdownTimeout) + ", max_jobs " + maxJobs + ", "
                + remoteJmx + ", " + log;
    }

    /** The folder of one job's files. */
    public Path jobDir(String job) {
        return dataDir.resolve("jobs").resolve(job);
    }

    /** Reads and validates a configuration file. */
    public static OrbitConfig read(Path file) throws IOException, ConfigException {
        Path abs = file.toAbsolutePath();
        return parse(abs.toString(), Files.readAllBytes(abs), abs.getParent());
    }

    /** Parses configuration text; an empty document is every default. */
    public static OrbitConfig parse(String source, byte[] content, Path baseDir) throws ConfigException {
        List<ConfigProblem> problems = new ArrayList<>();
        YamlNode root = new YamlTreeReader(YamlTreeReader.Limits.CONFIG).read(source, content, problems);
        OrbitConfig config = null;
        if (problems.isEmpty()) {
            config = read(Section.root(source, root, problems), baseDir);
        }
        if (!problems.isEmpty()) {
            problems.sort(Comparator.comparingInt(ConfigProblem::line).thenComparingInt(ConfigProblem::column));
            throw new ConfigException(problems);
        }
        return config;
    }

    /** Every default, as if read from an empty file in {@code baseDir}. */
    public static OrbitConfig defaults(Path baseDir) {
        try {
            return parse("defaults", new byte[0], baseDir);
        } catch (ConfigException e) {
            throw new IllegalStateException("the defaults do not validate: " + e.getMessage(), e);
        }
    }

    private static OrbitConfig read(Section s, Path base) {
        Path dataDir = path(s, "data_dir", base, "/var/lib/orbit");
        Path jobsDir = path(s, "jobs_dir", base, "/etc/orbit/jobs.d");
        List<String> devices = s.strings("devices", List.of("cpu:0"));
        WatchConfig watch = WatchConfig.read(s.section("watch"));
        Duration shutdown = s.duration("shutdown_timeout", Duration.ofSeconds(60));
        int maxJobs = s.integer("max_jobs", 1024);
        Section jmx = s.section("jmx");
        RemoteJmxConfig remote = RemoteJmxConfig.read(jmx.section("remote"), base);
        jmx.rejectUnknownKeys();
        LogConfig log = LogConfig.read(s.section("log"), base);
        if (watch == null || remote == null || log == null) {
            s.build(() -> { // this level's own rules still count; the sections' problems say the rest
                Checks c = new Checks();
                ownRules(c, dataDir, jobsDir, devices, shutdown, maxJobs);
                c.done();
                return null;
            });
            return null;
        }
        return s.build(() -> new OrbitConfig(dataDir, jobsDir, devices, watch, shutdown, maxJobs, remote, log));
    }

    /** A path key; empty means unset ({@code null}). */
    static Path path(Section s, String key, Path base) {
        return path(s, key, base, "");
    }

    private static Path path(Section s, String key, Path base, String def) {
        if (!s.has(key)) {
            return def.isBlank() ? null : base.resolve(def).normalize();
        }
        return s.path(key, base);   // text no path can hold is a problem at the key
    }

    /** The first line of a secret file (a password), without its line break. */
    public static String readSecret(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        if (lines.isEmpty() || lines.getFirst().isEmpty()) {
            throw new IOException(file + " is empty; it must hold the password on its first line");
        }
        return lines.getFirst();
    }
}
