package org.orbitrl.tools;

import java.io.IOException;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import javax.management.Attribute;
import javax.management.InstanceNotFoundException;
import javax.management.JMException;
import javax.management.MBeanAttributeInfo;
import javax.management.MBeanException;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.RuntimeMBeanException;
import javax.management.openmbean.CompositeData;
import javax.management.remote.JMXConnector;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/**
 * {@code orbitctl}: the daemon's JMX client. Reads only open types, so it needs none of the
 * daemon's classes at run time.
 *
 * <pre>
 * orbitctl status | jobs | job NAME | pause NAME | resume NAME | stop NAME | set NAME KEY VALUE | memory
 *          [--json] [--pid PID | --url URL --user USER --password-file FILE [--tls ...]]
 * </pre>
 * Exit codes: 0 done, 1 refused (no such job, invalid value, not allowed now), 2 usage, 3 cannot connect.
 */
@Command(name = "orbitctl", mixinStandardHelpOptions = true, version = "orbitctl 0.1.0",
        description = "Control the Orbit daemon over JMX: local attach by default, or remote JMX with --url.",
        subcommands = {OrbitCtl.Status.class, OrbitCtl.Jobs.class, OrbitCtl.JobInfo.class, OrbitCtl.Pause.class,
            OrbitCtl.Resume.class, OrbitCtl.Stop.class, OrbitCtl.SetTunable.class, OrbitCtl.Memory.class,
            CommandLine.HelpCommand.class})
public final class OrbitCtl implements Runnable {
    static final int REFUSED = 1;
    static final int CANNOT_CONNECT = 3;
    static final String DOMAIN = "org.orbitrl";

    @Mixin
    OrbitCtlConnection connection = new OrbitCtlConnection();

    @Option(names = "--json", scope = CommandLine.ScopeType.INHERIT, description = "Print JSON instead of text.")
    boolean json;

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }

    /** Runs a command line with the given streams and returns its exit code. */
    public static int execute(PrintWriter out, PrintWriter err, String... args) {
        CommandLine cl = new CommandLine(new OrbitCtl());
        cl.setOut(out);
        cl.setErr(err);
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (ex instanceof IOException) {
                cmd.getErr().println("orbitctl: " + ex.getMessage());
                return CANNOT_CONNECT;
            }
            cmd.getErr().println("orbitctl: " + reason(ex));
            return REFUSED;
        });
        int exit = cl.execute(args);
        out.flush();
        err.flush();
        return exit;
    }

    /** The only caller of System.exit in orbitctl. */
    public static void main(String[] args) {
        PrintWriter out = new PrintWriter(System.out, true);
        PrintWriter err = new PrintWriter(System.err, true);
        System.exit(execute(out, err, args));
    }

    /** What a refused JMX call says, without the JMX wrappers. */
    static String reason(Throwable t) {
        Throwable c = t;
        while (true) {
            if (c instanceof RuntimeMBeanException r && r.getTargetException() != null) {
                c = r.getTargetException();
            } else if (c instanceof MBeanException m && m.getTargetException() != null) {
                c = m.getTargetException();
            } else if (c instanceof InstanceNotFoundException i) {
                return "not found: " + i.getMessage();
            } else if (c instanceof SecurityException s) {
                return "access denied: " + s.getMessage();
            } else {
                return c.getMessage() == null ? c.toString() : c.getMessage();
            }
        }
    }

    static ObjectName name(String s) {
        try {
            return new ObjectName(s);
        } catch (JMException e) {
            throw new IllegalArgumentException(s, e);
        }
    }

    static ObjectName daemonName() {
        return name(DOMAIN + ":type=Daemon");
    }

    static ObjectName jobName(String job) {
        return name(DOMAIN + ":type=Job,name=" + ObjectName.quote(job));
    }

    /** Every attribute of a bean, in the bean's order. */
    static Map<String, Object> attributes(MBeanServerConnection mbs, ObjectName n) throws IOException, JMException {
        List<String> names = new ArrayList<>();
        for (MBeanAttributeInfo a : mbs.getMBeanInfo(n).getAttributes()) {
            names.add(a.getName());
        }
        Map<String, Object> out = new LinkedHashMap<>();
        for (Attribute a : mbs.getAttributes(n, names.toArray(String[]::new)).asList()) {
            out.put(a.getName(), a.getValue());
        }
        return out;
    }

    /** A command that talks to the daemon. */
    abstract static class Base implements Callable<Integer> {
        @ParentCommand
        OrbitCtl root;

        @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help message and exit.")
        boolean help;

        @Override
        public final Integer call() throws Exception {
            try (JMXConnector c = root.connection.connect()) {
                return run(c.getMBeanServerConnection(), root.spec().commandLine().getOut());
            }
        }

        abstract int run(MBeanServerConnection mbs, PrintWriter out) throws Exception;

        boolean json() {
            return root.json;
        }

        ObjectName job(MBeanServerConnection mbs, String name) throws IOException {
            ObjectName n = jobName(name);
            if (!mbs.isRegistered(n)) {
                throw new IllegalArgumentException("no job named '" + name + "' (orbitctl jobs lists them)");
            }
            return n;
        }
    }

    CommandLine.Model.CommandSpec spec() {
        return spec;
    }

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Command(name = "status", description = "The daemon: version, uptime, devices, jobs by state.")
    static final class Status extends Base {
        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            Map<String, Object> a = attributes(mbs, daemonName());
            Map<String, Object> s = new LinkedHashMap<>();
            for (String k : List.of("Version", "Pid", "StartTime", "UptimeSeconds", "Devices", "FreeDevices", "DataDir",
                    "JobsDir", "DataDirProblem", "RemoteJmxEnabled")) {
                s.put(k, a.get(k));
            }
            Map<String, Integer> byState = new TreeMap<>();
            for (Object row : (Object[]) a.get("Jobs")) {
                byState.merge((String) ((CompositeData) row).get("state"), 1, Integer::sum);
            }
            s.put("Jobs", byState);
            if (json()) {
                out.println(OrbitCtlFormat.json(s));
            } else {
                s.forEach((k, v) -> out.println(k + ": " + OrbitCtlFormat.text(v)));
            }
            return 0;
        }
    }

    @Command(name = "jobs", description = "Every job: state, step, reward, eval accuracy, devices, reason.")
    static final class Jobs extends Base {
        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            Object[] rows = (Object[]) mbs.getAttribute(daemonName(), "Jobs");
            if (json()) {
                out.println(OrbitCtlFormat.json(rows));
                return 0;
            }
            List<List<String>> table = new ArrayList<>();
            for (Object r : rows) {
                CompositeData c = (CompositeData) r;
                String reason = String.valueOf(c.get("reason")).lines().findFirst().orElse("");
                table.add(List.of(String.valueOf(c.get("name")), String.valueOf(c.get("state")),
                        c.get("step") + "/" + c.get("totalSteps"), OrbitCtlFormat.text(c.get("rewardMean")),
                        OrbitCtlFormat.text(c.get("evalAccuracy")), String.valueOf(c.get("devices")),
                        reason.length() > 80 ? reason.substring(0, 77) + "..." : reason));
            }
            out.print(OrbitCtlFormat.table(List.of("NAME", "STATE", "STEP", "REWARD", "EVAL", "DEVICES", "REASON"), table));
            return 0;
        }
    }

    @Command(name = "job", description = "One job: every attribute (state, metrics, tunables, checkpoint).")
    static final class JobInfo extends Base {
        @Parameters(index = "0", paramLabel = "NAME", description = JOB_NAME)
        String name;

        @Option(names = "--spec", description = "Also print the effective job file.")
        boolean spec;

        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            Map<String, Object> a = attributes(mbs, job(mbs, name));
            if (!spec) {
                a.remove("Spec");
            }
            if (json()) {
                out.println(OrbitCtlFormat.json(a));
            } else {
                a.forEach((k, v) -> out.println(k + ": " + OrbitCtlFormat.text(v)));
            }
            return 0;
        }
    }

    /** The description of a job's NAME parameter. */
    static final String JOB_NAME = "The job's name: its file name without .yaml (orbitctl jobs lists them).";

    /** pause, resume, stop: an operation, then (with --wait) the state it leads to. */
    abstract static class Control extends Base {
        @Parameters(index = "0", paramLabel = "NAME", description = JOB_NAME)
        String name;

        abstract String operation();

        /** Whether --wait was given; each command's --wait says which states it waits for. */
        abstract boolean await();

        abstract Set<String> reached();

        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            ObjectName n = job(mbs, name);
            mbs.invoke(n, operation(), null, null);
            String state = (String) mbs.getAttribute(n, "State");
            long deadline = System.nanoTime() + 600_000_000_000L;
            while (await() && !reached().contains(state) && System.nanoTime() < deadline) {
                Thread.sleep(100);
                state = (String) mbs.getAttribute(n, "State");
            }
            if (json()) {
                out.println(OrbitCtlFormat.json(Map.of("job", name, "operation", operation(), "state", state)));
            } else {
                out.println("job " + name + ": " + operation() + " requested; state " + state);
            }
            return await() && !reached().contains(state) ? REFUSED : 0;
        }
    }

    @Command(name = "pause", description = "Pause a job after its current step (it checkpoints and keeps its devices).")
    static final class Pause extends Control {
        @Option(names = "--wait", description = "Wait (up to 10 minutes) until the job is paused, or has completed,"
                + " stopped or failed; exit code 1 if it has not by then.")
        boolean await;

        boolean await() {
            return await;
        }

        String operation() {
            return "pause";
        }

        Set<String> reached() {
            return Set.of("paused", "completed", "stopped", "failed");
        }
    }

    @Command(name = "resume", description = "Resume a paused job; queue a stopped or failed one again (from its checkpoint).")
    static final class Resume extends Control {
        @Option(names = "--wait", description = "Wait (up to 10 minutes) until the job is running, or queued again"
                + " (queued, planning, loading), or has completed or failed; exit code 1 if it has not by then.")
        boolean await;

        boolean await() {
            return await;
        }

        String operation() {
            return "resume";
        }

        Set<String> reached() {
            return Set.of("running", "queued", "planning", "loading", "completed", "failed");
        }
    }

    @Command(name = "stop", description = "Stop a job after a checkpoint.")
    static final class Stop extends Control {
        @Option(names = "--wait", description = "Wait (up to 10 minutes) until the job is stopped, or has completed or"
                + " failed; exit code 1 if it has not by then.")
        boolean await;

        boolean await() {
            return await;
        }

        String operation() {
            return "stop";
        }

        Set<String> reached() {
            return Set.of("stopped", "completed", "failed");
        }
    }

    @Command(name = "set", description = "Set a live-tunable field of a job; it applies at the next step. The job file"
            + " is not written: a later edit of the file applies the file's value again.")
    static final class SetTunable extends Base {
        @Parameters(index = "0", paramLabel = "NAME", description = JOB_NAME)
        String name;

        @Parameters(index = "1", paramLabel = "KEY", description = "The field: optimizer.lr (or lr), sampling.temperature"
                + " (temperature), async.staleness_bound (staleness_bound), eval.interval (eval_interval).")
        String key;

        @Parameters(index = "2", paramLabel = "VALUE", description = "Its new value, checked as in a job file"
                + " (lr 2e-5, temperature 0.7).")
        String value;

        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            String result = (String) mbs.invoke(job(mbs, name), "set", new Object[] {key, value},
                    new String[] {String.class.getName(), String.class.getName()});
            if (json()) {
                out.println(OrbitCtlFormat.json(Map.of("job", name, "set", result)));
            } else {
                out.println("job " + name + ": " + result);
            }
            return 0;
        }
    }

    @Command(name = "memory", description = "Memory by device and category: live, peak and planned bytes.")
    static final class Memory extends Base {
        @Override
        int run(MBeanServerConnection mbs, PrintWriter out) throws Exception {
            Map<String, Object> devices = new LinkedHashMap<>();
            List<List<String>> rows = new ArrayList<>();
            for (ObjectName n : new java.util.TreeSet<>(mbs.queryNames(name(DOMAIN + ":type=Memory,*"), null))) {
                Map<String, Object> a = attributes(mbs, n);
                String device = (String) a.get("Device");
                devices.put(device, OrbitCtlFormat.plain(a));
                @SuppressWarnings("unchecked")
                Map<String, Object> live = (Map<String, Object>) OrbitCtlFormat.plain(a.get("Live"));
                @SuppressWarnings("unchecked")
                Map<String, Object> peak = (Map<String, Object>) OrbitCtlFormat.plain(a.get("Peak"));
                @SuppressWarnings("unchecked")
                Map<String, Object> planned = (Map<String, Object>) OrbitCtlFormat.plain(a.get("Planned"));
                for (String category : live.keySet()) {
                    long l = (Long) live.get(category);
                    long p = (Long) peak.get(category);
                    long b = (Long) planned.get(category);
                    if (l != 0 || p != 0 || b != 0) {
                        rows.add(List.of(device, category, OrbitCtlFormat.bytes(l), OrbitCtlFormat.bytes(p),
                                OrbitCtlFormat.bytes(b)));
                    }
                }
                rows.add(List.of(device, "total", OrbitCtlFormat.bytes((Long) a.get("LiveBytes")),
                        OrbitCtlFormat.bytes((Long) a.get("PeakBytes")), OrbitCtlFormat.bytes((Long) a.get("PlannedBytes"))));
            }
            if (json()) {
                out.println(OrbitCtlFormat.json(devices));
            } else {
                out.print(OrbitCtlFormat.table(List.of("DEVICE", "CATEGORY", "LIVE", "PEAK", "PLANNED"), rows));
            }
            return 0;
        }
    }
}
