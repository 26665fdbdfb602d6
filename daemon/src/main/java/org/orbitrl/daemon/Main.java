package org.orbitrl.daemon;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import org.orbitrl.daemon.config.LogConfig;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.systemd.SdNotify;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.Units;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;

/**
 * {@code orbitd}: the daemon process. The only place in Orbit that calls {@link System#exit}.
 *
 * <pre>
 * orbitd [--config FILE] [--check]
 *   --config FILE   configuration (default /etc/orbit/orbit.yaml)
 *   --check         validate the configuration and exit
 * </pre>
 *
 * SIGTERM and SIGINT checkpoint every running job and exit 0 within the configured shutdown
 * timeout. Exit codes: 0 clean, 64 usage, 71 OS error, 75 data directory in use, 78 bad configuration.
 */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs the daemon until SIGTERM/SIGINT and returns the exit code. */
    static int run(String[] args, PrintStream out, PrintStream err) {
        Path configFile = OrbitConfig.DEFAULT_FILE;
        boolean check = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--config" -> {
                    if (i + 1 == args.length) {
                        err.println("orbitd: --config needs a file");
                        return DaemonException.USAGE;
                    }
                    configFile = Path.of(args[++i]);
                }
                case "--check" -> check = true;
                case "--version" -> {
                    out.println("orbitd " + Version.VERSION);
                    return 0;
                }
                case "--help", "-h" -> {
                    out.println("usage: orbitd [--config FILE] [--check] [--version]");
                    out.println("  --config FILE  daemon configuration (default " + OrbitConfig.DEFAULT_FILE + ")");
                    out.println("  --check        validate the configuration and exit");
                    return 0;
                }
                default -> {
                    err.println("orbitd: unknown argument '" + args[i] + "' (see --help)");
                    return DaemonException.USAGE;
                }
            }
        }
        OrbitConfig config;
        try {
            config = OrbitConfig.read(configFile);
        } catch (NoSuchFileException e) {
            err.println("orbitd: no configuration at " + configFile + "; create it (conf/orbit.yaml lists every key)"
                    + " or pass --config FILE");
            return DaemonException.CONFIG;
        } catch (IOException e) {
            err.println("orbitd: cannot read " + configFile + ": " + e.getMessage());
            return DaemonException.CONFIG;
        } catch (ConfigException e) {
            err.println("orbitd: " + configFile + " is not valid: " + e.getMessage());
            return DaemonException.CONFIG;
        }
        if (check) {
            out.println("orbitd: " + configFile + " is valid");
            return 0;
        }
        configureLogging(config.log());
        Logger log = LoggerFactory.getLogger(Main.class);
        log.info("configuration {}: {}", configFile.toAbsolutePath(), config);
        try {
            return serve(config, log);
        } catch (DaemonException e) {
            log.error("{}", e.getMessage());
            err.println("orbitd: " + e.getMessage());
            return e.exitCode();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return DaemonException.OS;
        }
    }

    private static int serve(OrbitConfig config, Logger log) throws DaemonException, InterruptedException {
        CountDownLatch stop = new CountDownLatch(1);
        // Handling TERM ourselves replaces the JVM's default (run hooks, exit 143): the daemon
        // checkpoints its jobs and exits 0, which systemd records as a clean stop. sun.misc.Signal
        // (module jdk.unsupported) is the JDK's supported way to do that; javac warns about it.
        Signal.handle(new Signal("TERM"), s -> stop.countDown());
        Signal.handle(new Signal("INT"), s -> stop.countDown());
        Daemon daemon = Daemon.start(config, Daemon.installedRunners(), ManagementFactory.getPlatformMBeanServer());
        // Any other way the JVM ends (System.exit from elsewhere, SIGHUP) still checkpoints.
        Thread hook = new Thread(daemon::close, "orbit-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);
        SdNotify systemd = SdNotify.fromEnvironment();
        notify(systemd, log, () -> systemd.ready(daemon.status()));
        Thread watchdog = startWatchdog(systemd, daemon, log);
        stop.await();
        log.info("stopping: checkpointing running jobs (up to {})", Units.formatDuration(config.shutdownTimeout()));
        notify(systemd, log, () -> systemd.stopping(config.shutdownTimeout().plusSeconds(10)));
        if (watchdog != null) {
            watchdog.interrupt();
        }
        daemon.close();
        return 0;
    }

    /** Pings the systemd watchdog at half its interval while the daemon's threads are healthy. */
    private static Thread startWatchdog(SdNotify systemd, Daemon daemon, Logger log) {
        Duration interval = SdNotify.watchdogInterval();
        if (interval == null || !systemd.enabled()) {
            return null;
        }
        Thread t = Thread.ofPlatform().name("systemd-watchdog").daemon(true).start(() -> {
            while (!Thread.currentThread().isInterrupted()) {
                if (daemon.healthy(interval)) {
                    notify(systemd, log, systemd::watchdog);
                    notify(systemd, log, () -> systemd.status(daemon.status()));
                } else {
                    log.error("the jobs watcher is not responding; withholding the systemd watchdog ping");
                }
                try {
                    Thread.sleep(interval.dividedBy(2));
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        return t;
    }

    private interface Notification {
        void send() throws IOException;
    }

    private static void notify(SdNotify systemd, Logger log, Notification n) {
        try {
            n.send();
        } catch (IOException e) {
            log.warn("systemd notification failed: {}", e.getMessage());
        }
    }

    /** Applies the log settings; a system property given on the command line wins over the file. */
    static void configureLogging(LogConfig c) {
        setIfAbsent("org.slf4j.simpleLogger.defaultLogLevel", c.level());
        setIfAbsent("org.slf4j.simpleLogger.logFile", c.file() == null ? "System.err" : c.file().toString());
        setIfAbsent("org.slf4j.simpleLogger.showDateTime", Boolean.toString(c.showDateTime()));
        setIfAbsent("org.slf4j.simpleLogger.dateTimeFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSZ");
        setIfAbsent("org.slf4j.simpleLogger.showShortLogName", "true");
        setIfAbsent("org.slf4j.simpleLogger.levelInBrackets", "true");
        // Chronicle announces itself at INFO on first use; its warnings and errors still show.
        setIfAbsent("org.slf4j.simpleLogger.log.net.openhft", "warn");
        setIfAbsent("org.slf4j.simpleLogger.log.orbit.progress", c.progress() ? "info" : "warn");
    }

    private static void setIfAbsent(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }
}
