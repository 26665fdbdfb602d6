package org.orbitrl.daemon.jmx;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import javax.management.InstanceNotFoundException;
import javax.management.JMException;
import javax.management.MBeanServer;
import javax.management.MalformedObjectNameException;
import javax.management.ObjectName;
import javax.management.StandardEmitterMBean;
import javax.management.StandardMBean;
import org.orbitrl.daemon.config.RemoteJmxConfig;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobListener;
import org.orbitrl.daemon.jobs.JobManager;
import org.orbitrl.daemon.jobs.JobState;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Registers the daemon's MBeans, keeps one Job MBean per job as jobs come and go, turns job
 * events into notifications, and opens remote JMX when configured. Unregisters everything on close.
 */
public final class JmxAgent implements JobListener, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(JmxAgent.class);
    public static final String DOMAIN = "org.orbitrl";

    private final MBeanServer server;
    private final JobManager manager;
    private final DaemonBean daemon;
    private final AtomicLong seq = new AtomicLong();
    private final Map<String, JobBean> jobs = new ConcurrentHashMap<>();
    private final List<ObjectName> registered = new ArrayList<>();
    private RemoteJmx remote;

    public JmxAgent(MBeanServer server, JobManager manager, Runnable rescan, String dataDirProblem,
                    RemoteJmxConfig remoteConfig) throws JMException, IOException {
        this.server = server;
        this.manager = manager;
        this.daemon = new DaemonBean(manager, rescan, dataDirProblem, remoteConfig.enabled(), seq);
        register(daemonName(), new StandardEmitterMBean(daemon, DaemonMXBean.class, true, daemon));
        for (String device : manager.devices()) {
            register(memoryName(device), new StandardMBean(new DeviceMemoryBean(device, manager), DeviceMemoryMXBean.class,
                    true));
        }
        manager.jobs().forEach(this::added);
        manager.addListener(this);
        if (remoteConfig.enabled()) {
            remote = RemoteJmx.start(remoteConfig, server);
            LOG.info("remote JMX listening at {}", remote.url());
        }
    }

    /** The remote JMX address, or {@code null} when remote JMX is off. */
    public String remoteUrl() {
        return remote == null ? null : remote.url().toString();
    }

    public static ObjectName daemonName() {
        return name(DOMAIN + ":type=Daemon");
    }

    public static ObjectName jobName(String job) {
        return name(DOMAIN + ":type=Job,name=" + ObjectName.quote(job));
    }

    public static ObjectName memoryName(String device) {
        return name(DOMAIN + ":type=Memory,device=" + ObjectName.quote(device));
    }

    private static ObjectName name(String s) {
        try {
            return new ObjectName(s);
        } catch (MalformedObjectNameException e) {
            throw new IllegalArgumentException(s, e);
        }
    }

    private synchronized void register(ObjectName name, Object bean) throws JMException {
        server.registerMBean(bean, name);
        registered.add(name);
    }

    @Override
    public void added(Job job) {
        JobBean bean = new JobBean(job, manager, seq);
        try {
            register(jobName(job.name()), new StandardEmitterMBean(bean, JobMXBean.class, true, bean));
            jobs.put(job.name(), bean);
        } catch (JMException e) {
            LOG.error("cannot register the JMX bean of job {}: {}", job.name(), e.toString());
        }
    }

    @Override
    public synchronized void removed(Job job) {
        jobs.remove(job.name());
        ObjectName n = jobName(job.name());
        try {
            server.unregisterMBean(n);
        } catch (InstanceNotFoundException e) {
            LOG.debug("job bean {} was not registered", n);
        } catch (JMException e) {
            LOG.error("cannot unregister {}: {}", n, e.toString());
        }
        registered.remove(n);
    }

    @Override
    public void stateChanged(Job job, JobState from, JobState to, String reason) {
        daemon.stateChanged(job, from, to, reason);
        JobBean bean = jobs.get(job.name());
        if (bean != null) {
            bean.stateChanged(from.name().toLowerCase(java.util.Locale.ROOT), to.name().toLowerCase(java.util.Locale.ROOT),
                    reason);
        }
    }

    @Override
    public void notice(String job, String kind, String message) {
        daemon.notice(job, Notifications.ofKind(kind), message);
    }

    @Override
    public synchronized void close() throws IOException {
        if (remote != null) {
            remote.close();
        }
        for (ObjectName n : List.copyOf(registered)) {
            try {
                server.unregisterMBean(n);
            } catch (JMException e) {
                LOG.debug("unregistering {}: {}", n, e.toString());
            }
        }
        registered.clear();
    }
}
