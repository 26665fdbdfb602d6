package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.management.ManagementFactory;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import javax.management.MBeanServerFactory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.Daemon;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.scheduler.job.DeviceMemory;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;

/** orbitctl against a real daemon: remote JMX with users and roles, and local attach to a daemon process. */
class OrbitCtlTest {
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;
    Daemon daemon;

    @AfterEach
    void tearDown() {
        if (daemon != null) {
            daemon.close();
        }
    }

    record Result(int exit, String out, String err) {
        JsonNode json() throws IOException {
            return JSON.readTree(out);
        }
    }

    static Result ctl(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int exit = OrbitCtl.execute(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new Result(exit, out.toString(), err.toString());
    }

    /** A runner that sleeps through its steps: enough for a control tool to have something to control. */
    static final class Sleeper implements JobRunner {
        private final JobContext ctx;
        private volatile long step;

        Sleeper(JobContext ctx) {
            this.ctx = ctx;
        }

        public JobPlan plan() {
            return new JobPlan(Map.of(), "");
        }

        public void load(Checkpoint cp) throws org.orbitrl.scheduler.job.JobException {
            try {
                step = cp == null ? 0 : Long.parseLong(new String(cp.bytes("step"), StandardCharsets.UTF_8));
            } catch (IOException e) {
                throw new org.orbitrl.scheduler.job.JobException(e.getMessage(), e);
            }
        }

        public StepMetrics step() throws org.orbitrl.scheduler.job.JobException {
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                throw new org.orbitrl.scheduler.job.JobException("interrupted");
            }
            step++;
            return StepMetrics.basic(step, 0.5, 0.25, 100, 0.02, step, step * 4, Map.of("loss", 0.1));
        }

        public EvalResult evaluate() {
            return new EvalResult(step, 0.3, new TreeMap<>(Map.of(1, 0.3, 4, 0.6)), 10, 0.01);
        }

        public void checkpoint(CheckpointWriter out) throws IOException {
            out.section("step", Long.toString(step).getBytes(StandardCharsets.UTF_8));
        }

        public RunnerState state() {
            return new RunnerState(step, step, -1, step * 4);
        }

        public void pause() {
        }

        public void resume() {
        }

        public void apply(Tunables t) {
        }

        public Map<String, Double> gauges() {
            return Map.of("rollout_idle_fraction", 0.1);
        }

        public List<DeviceMemory> memory() {
            return ctx.devices().stream().map(d -> new DeviceMemory(d, Map.of(MemoryCategory.KV_CACHE, 3L << 30),
                    Map.of(MemoryCategory.KV_CACHE, 4L << 30), Map.of(MemoryCategory.KV_CACHE, 5L << 30))).toList();
        }

        public void close() {
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    List<String> remote() throws Exception {
        Path jobs = Files.createDirectories(tmp.resolve("jobs.d"));
        Path password = tmp.resolve("jmx.password");
        Files.writeString(password, "admin adm1n\nviewer v1ew\n");
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString("rw-------"));
        Files.writeString(tmp.resolve("jmx.access"), "admin readwrite\nviewer readonly\n");
        Files.writeString(tmp.resolve("admin.pass"), "adm1n\n");
        Files.writeString(tmp.resolve("viewer.pass"), "v1ew\n");
        String yaml = "data_dir: " + tmp.resolve("data") + "\njobs_dir: " + jobs + "\ndevices: [cpu:0, cpu:1]\n"
                + "watch: {debounce: 100ms}\njmx: {remote: {enabled: true, port: " + freePort() + ", password_file: "
                + password + ", access_file: " + tmp.resolve("jmx.access") + "}}\n";
        OrbitConfig config = OrbitConfig.parse("orbit.yaml", yaml.getBytes(StandardCharsets.UTF_8), tmp);
        JobRunnerProvider sleeper = new JobRunnerProvider() {
            public String name() {
                return "sleep";
            }

            public JobRunner create(JobContext c) {
                return new Sleeper(c);
            }
        };
        daemon = Daemon.start(config, Map.of("sleep", sleeper), MBeanServerFactory.newMBeanServer());
        Files.writeString(jobs.resolve("nap.yaml"), "runner: sleep\nmodel: {path: /m}\nsteps: 100000\n"
                + "eval: {interval: 5, samples: 4, pass_at_k: [1, 4]}\n");
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (daemon.jobs().job("nap").map(j -> j.state() != JobState.RUNNING || j.lastEval() == null).orElse(true)) {
            assertTrue(System.nanoTime() < deadline, "job nap did not start");
            Thread.sleep(20);
        }
        return new ArrayList<>(List.of("--url", daemon.remoteJmxUrl(), "--user", "admin", "--password-file",
                tmp.resolve("admin.pass").toString()));
    }

    static String[] args(List<String> conn, String... more) {
        List<String> all = new ArrayList<>(List.of(more));
        all.addAll(1, conn); // connection options after the subcommand name
        return all.toArray(String[]::new);
    }

    @Test
    void everyCommandWorksOverRemoteJmx() throws Exception {
        List<String> admin = remote();
        Result status = ctl(args(admin, "status", "--json"));
        assertEquals(0, status.exit(), status.err());
        assertEquals("0.1.0-SNAPSHOT", status.json().get("Version").asText());
        assertEquals(1, status.json().get("Jobs").get("running").asInt());
        assertEquals(List.of("cpu:0", "cpu:1"), JSON.convertValue(status.json().get("Devices"), List.class));

        Result jobs = ctl(args(admin, "jobs"));
        assertEquals(0, jobs.exit(), jobs.err());
        assertTrue(jobs.out().startsWith("NAME  STATE    STEP"), jobs.out());
        assertTrue(jobs.out().lines().skip(1).findFirst().orElseThrow().startsWith("nap   running  "), jobs.out());

        Result job = ctl(args(admin, "job", "nap", "--json"));
        assertEquals(0, job.exit(), job.err());
        assertEquals("running", job.json().get("State").asText());
        assertEquals(0.6, job.json().get("PassAtK").path("4").asDouble(), 0.0, job.out());
        assertEquals(0.1, job.json().get("Gauges").path("rollout_idle_fraction").asDouble(), 0.0, job.out());

        Result set = ctl(args(admin, "set", "nap", "temperature", "0.5"));
        assertEquals("job nap: sampling.temperature = 0.5\n", set.out(), set.err());
        Result bad = ctl(args(admin, "set", "nap", "temperature", "-2"));
        assertEquals(1, bad.exit());
        assertEquals("orbitctl: sampling.temperature: must be between 0 and 10, got -2\n", bad.err());
        Result fixed = ctl(args(admin, "set", "nap", "adapter.rank", "8"));
        assertEquals(1, fixed.exit());
        assertTrue(fixed.err().contains("'adapter.rank' is not a live-tunable key"), fixed.err());

        Result memory = ctl(args(admin, "memory"));
        assertEquals(0, memory.exit(), memory.err());
        assertTrue(memory.out().contains("cpu:0   kv_cache  3.0 GiB  4.0 GiB  5.0 GiB"), memory.out());

        Result pause = ctl(args(admin, "pause", "nap", "--wait"));
        assertEquals("job nap: pause requested; state paused\n", pause.out(), pause.err());
        Result resume = ctl(args(admin, "--json", "resume", "nap", "--wait"));
        assertEquals("running", resume.json().get("state").asText(), resume.err());

        Result missing = ctl(args(admin, "job", "nope"));
        assertEquals(1, missing.exit());
        assertEquals("orbitctl: no job named 'nope' (orbitctl jobs lists them)\n", missing.err());

        List<String> viewer = List.of("--url", daemon.remoteJmxUrl(), "--user", "viewer", "--password-file",
                tmp.resolve("viewer.pass").toString());
        assertEquals(0, ctl(args(viewer, "jobs")).exit());
        Result denied = ctl(args(viewer, "stop", "nap"));
        assertEquals(1, denied.exit());
        assertTrue(denied.err().startsWith("orbitctl: access denied:"), denied.err());
        Result wrong = ctl(args(List.of("--url", daemon.remoteJmxUrl(), "--user", "admin", "--password-file",
                tmp.resolve("viewer.pass").toString()), "status"));
        assertEquals(3, wrong.exit());
        assertTrue(wrong.err().contains("Authentication failed"), wrong.err());

        Result stop = ctl(args(admin, "stop", "nap", "--wait"));
        assertEquals("job nap: stop requested; state stopped\n", stop.out(), stop.err());
    }

    @Test
    void attachesToALocalDaemonProcess() throws Exception {
        Path jobs = Files.createDirectories(tmp.resolve("jobs.d"));
        Path config = tmp.resolve("orbit.yaml");
        Files.writeString(config, "data_dir: " + tmp.resolve("data") + "\njobs_dir: " + jobs + "\ndevices: [cpu:0]\n"
                + "log: {level: info}\n");
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (a.startsWith("--add-") || a.startsWith("--enable-native-access") || a.startsWith("--sun-misc")
                    || a.startsWith("-Dchronicle.")) {
                cmd.add(a);
            }
        }
        cmd.addAll(List.of("-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path"),
                "org.orbitrl.daemon.Main", "--config", config.toString()));
        Path log = tmp.resolve("daemon.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try {
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (!Files.readString(log).contains("Orbit daemon") || !Files.readString(log).contains("serving")) {
                assertTrue(p.isAlive() && System.nanoTime() < deadline, Files.readString(log));
                Thread.sleep(50);
            }
            Result status = ctl("--pid", Long.toString(p.pid()), "status", "--json");
            assertEquals(0, status.exit(), status.err());
            assertEquals(p.pid(), status.json().get("Pid").asLong());
            assertEquals(jobs.toString(), status.json().get("JobsDir").asText());
            Result list = ctl("jobs", "--pid", Long.toString(p.pid()));
            assertEquals("NAME  STATE  STEP  REWARD  EVAL  DEVICES  REASON\n", list.out(), list.err());
        } finally {
            p.destroy();
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
        }
        assertEquals(0, p.exitValue(), Files.readString(log));
    }

    @Test
    void noDaemonIsAClearError() {
        Result r = ctl("status", "--pid", "999999999");
        assertEquals(3, r.exit());
        assertTrue(r.err().startsWith("orbitctl: cannot attach to process 999999999"), r.err());
    }
}
