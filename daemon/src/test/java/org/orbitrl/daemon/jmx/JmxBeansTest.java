package org.orbitrl.daemon.jmx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import javax.management.AttributeChangeNotification;
import javax.management.Descriptor;
import javax.management.JMX;
import javax.management.MBeanAttributeInfo;
import javax.management.MBeanInfo;
import javax.management.MBeanOperationInfo;
import javax.management.MBeanParameterInfo;
import javax.management.Notification;
import javax.management.ObjectName;
import javax.management.openmbean.CompositeData;
import javax.management.openmbean.OpenType;
import javax.management.openmbean.TabularData;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;

class JmxBeansTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void tearDown() {
        LedgerRunner.stepDelayMillis = 0;
        if (h != null) {
            h.close();
        }
    }

    @Test
    void everyAttributeOperationAndParameterIsAnOpenType() throws Exception {
        LedgerRunner.stepDelayMillis = 20;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("alpha", DaemonHarness.ledgerJob(1000, ""));
        h.awaitState("alpha", JobState.RUNNING);
        h.await("an evaluation", Duration.ofSeconds(10), () -> h.job("alpha").lastEval() != null);
        Set<ObjectName> names = h.mbeans.queryNames(new ObjectName("org.orbitrl:*"), null);
        assertEquals(Set.of(JmxAgent.daemonName(), JmxAgent.jobName("alpha"), JmxAgent.memoryName("cpu:0")), names);
        List<String> checked = new ArrayList<>();
        for (ObjectName n : names) {
            MBeanInfo info = h.mbeans.getMBeanInfo(n);
            for (MBeanAttributeInfo a : info.getAttributes()) {
                assertOpen(n + " attribute " + a.getName(), a.getDescriptor());
                Object v = h.mbeans.getAttribute(n, a.getName());
                assertTrue(v == null || isOpenValue(v), n + "." + a.getName() + " = " + v.getClass());
                checked.add(a.getName());
            }
            for (MBeanOperationInfo o : info.getOperations()) {
                assertOpen(n + " operation " + o.getName(), o.getDescriptor());
                for (MBeanParameterInfo p : o.getSignature()) {
                    assertOpen(n + " " + o.getName() + "(" + p.getName() + ")", p.getDescriptor());
                }
            }
        }
        assertTrue(checked.containsAll(List.of("State", "Step", "RewardMean", "EvalAccuracy", "PassAtK", "LogprobGapMean",
                "TokensPerSecond", "StepTimeSeconds", "AdapterVersion", "Staleness", "Version", "UptimeSeconds", "Devices",
                "Jobs", "Live", "Peak", "Planned")), checked.toString());
        TabularData passAtK = (TabularData) h.mbeans.getAttribute(JmxAgent.jobName("alpha"), "PassAtK");
        assertEquals(2, passAtK.size(), "k = 1 and 4");
        CompositeData[] jobs = (CompositeData[]) h.mbeans.getAttribute(JmxAgent.daemonName(), "Jobs");
        assertEquals("alpha", jobs[0].get("name"));
        assertEquals("running", jobs[0].get("state"));
        TabularData live = (TabularData) h.mbeans.getAttribute(JmxAgent.memoryName("cpu:0"), "Live");
        assertEquals(1L << 20, live.get(new Object[] {"adapter_params"}).get("value"));
        assertEquals(4L << 20, h.mbeans.getAttribute(JmxAgent.memoryName("cpu:0"), "PlannedBytes"));
    }

    @Test
    void operationsAndTunablesWorkThroughAnMxBeanProxyAndAreValidated() throws Exception {
        LedgerRunner.stepDelayMillis = 20;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("beta", DaemonHarness.ledgerJob(1000, ""));
        h.awaitState("beta", JobState.RUNNING);
        JobMXBean job = JMX.newMXBeanProxy(h.mbeans, JmxAgent.jobName("beta"), JobMXBean.class);
        job.setTemperature(0.5);
        assertEquals(0.5, job.getTemperature(), 0.0);
        job.setLearningRate(3e-5);
        assertEquals(3e-5, job.getLearningRate(), 0.0);
        assertEquals("async.staleness_bound = 3", job.set("staleness", "3"));
        assertEquals(3, job.getStalenessBound());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> job.setLearningRate(-1));
        assertEquals("optimizer.lr: must be greater than 0 and at most 1, got -1", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> job.setEvalInterval(-5));
        assertEquals("eval.interval: must be between 0 and 1000000000, got -5", e.getMessage());
        job.pause();
        h.awaitState("beta", JobState.PAUSED);
        assertEquals("paused", job.getState());
        job.checkpointNow();
        job.resume();
        h.awaitState("beta", JobState.RUNNING);
        job.stop();
        h.awaitState("beta", JobState.STOPPED);
        IllegalStateException s = assertThrows(IllegalStateException.class, job::checkpointNow);
        assertEquals("job beta is stopped; only a running or paused job can checkpoint", s.getMessage());
    }

    @Test
    void stateChangesAndInvalidFilesAreNotified() throws Exception {
        h = new DaemonHarness(tmp, "").start();
        List<Notification> got = new CopyOnWriteArrayList<>();
        h.mbeans.addNotificationListener(JmxAgent.daemonName(), (n, hb) -> got.add(n), null, null);
        h.writeJob("gamma", DaemonHarness.ledgerJob(3, ""));
        h.awaitState("gamma", JobState.COMPLETED);
        h.writeJob("broken", "model: {path: m}\nsampling:\n  temperature: hot\nsteps: 0\n");
        h.await("an invalid-file notification", Duration.ofSeconds(10),
                () -> got.stream().anyMatch(n -> n.getType().equals(Notifications.INVALID_FILE)));
        List<String> states = got.stream().filter(n -> n instanceof AttributeChangeNotification)
                .map(n -> (AttributeChangeNotification) n).filter(n -> "gamma".equals(n.getUserData()))
                .map(n -> n.getOldValue() + "->" + n.getNewValue()).toList();
        assertEquals(List.of("queued->planning", "planning->loading", "loading->running", "running->completed"), states);
        Notification invalid = got.stream().filter(n -> n.getType().equals(Notifications.INVALID_FILE)).findFirst()
                .orElseThrow();
        assertEquals("broken", invalid.getUserData());
        assertTrue(invalid.getMessage().contains("broken.yaml:3:16: sampling.temperature: expected a number, got 'hot'"),
                invalid.getMessage());
        assertTrue(invalid.getMessage().contains("broken.yaml:4:8: steps: must be between 1 and 1000000000, got 0"),
                invalid.getMessage());
        // The reason is one line that orbitctl jobs can show: the first problem, and how many more there are.
        assertEquals("invalid job file: broken.yaml:3:16: sampling.temperature: expected a number, got 'hot' (and 1 more)",
                h.job("broken").reason());
        assertEquals(invalid.getMessage(), h.mbeans.getAttribute(JmxAgent.jobName("broken"), "LastNotice"));
        assertEquals(JobState.FAILED, h.job("broken").state());
    }

    static void assertOpen(String what, Descriptor d) {
        Object t = d.getFieldValue("openType");
        assertNotNull(t, what + " has no open type");
        assertInstanceOf(OpenType.class, t, what);
    }

    static boolean isOpenValue(Object v) {
        if (v.getClass().isArray()) {
            return v instanceof String[] || v instanceof CompositeData[] || v instanceof long[] || v instanceof double[];
        }
        return v instanceof String || v instanceof Number || v instanceof Boolean || v instanceof CompositeData
                || v instanceof TabularData;
    }
}
