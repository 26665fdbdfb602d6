package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

import java.util.List;

/**
 * The devices a job needs and how it uses them. The daemon gives a job free devices of its
 * backend; a job that does not fit the free devices waits in the queue.
 *
 * @param backend        cpu or cuda
 * @param devices        devices the job needs (on each node when {@code hosts} names several)
 * @param rolloutDevices of those, how many only roll out (0 = every device trains and rolls out)
 * @param expertParallel expert-parallel group size among the training devices
 * @param tensorParallel tensor-parallel group size among the training devices
 * @param hosts          the nodes of a multi-node job, in rank order (empty: this node alone); each
 *                       node's daemon finds its own name in the list
 * @param rendezvous     {@code host:port} where the first host's daemon serves the communicator's
 *                       unique id to the others (empty: the first host, port 29400)
 */
public record PlacementSpec(ComputeBackend backend, int devices, int rolloutDevices, int expertParallel,
                            int tensorParallel, List<String> hosts, String rendezvous) {
    /** The default rendezvous port on the first host. */
    public static final int DEFAULT_RENDEZVOUS_PORT = 29400;

    /** A single-node placement. */
    public PlacementSpec(ComputeBackend backend, int devices, int rolloutDevices, int expertParallel, int tensorParallel) {
        this(backend, devices, rolloutDevices, expertParallel, tensorParallel, List.of(), "");
    }

    public PlacementSpec {
        hosts = hosts == null ? List.of() : List.copyOf(hosts);
        rendezvous = rendezvous == null ? "" : rendezvous;
        Checks c = new Checks()
                .require(backend != null, "backend", "is required")
                .range("devices", devices, 1, 1024)
                .range("rollout_devices", rolloutDevices, 0, 1023)
                .range("expert_parallel", expertParallel, 1, 1024)
                .range("tensor_parallel", tensorParallel, 1, 1024);
        int train = devices - rolloutDevices;
        if (c.valid("devices", "rollout_devices")) {
            c.require(rolloutDevices < devices, "rollout_devices", "must leave at least one training device: "
                    + rolloutDevices + " of " + devices + " devices");
        }
        if (c.valid("devices", "rollout_devices", "expert_parallel", "tensor_parallel")) {
            c.require(train % ((long) expertParallel * tensorParallel) == 0, "expert_parallel",
                    "expert_parallel × tensor_parallel (" + (long) expertParallel * tensorParallel
                            + ") must divide the training devices (" + train + ")");
        }
        c.require(hosts.stream().distinct().count() == hosts.size(), "hosts", "names a host twice: " + hosts);
        c.require(hosts.stream().noneMatch(String::isBlank), "hosts", "has an empty name: " + hosts);
        c.require(rendezvous.isEmpty() || parsePort(rendezvous) > 0, "rendezvous",
                "must be host:port with a port in 1..65535, got '" + rendezvous + "'");
        c.require(rendezvous.isEmpty() || hosts.size() > 1, "rendezvous", "only applies to a job on several hosts");
        c.done();
    }

    private static int parsePort(String hostPort) {
        int colon = hostPort.lastIndexOf(':');
        if (colon <= 0) {
            return -1;
        }
        try {
            int port = Integer.parseInt(hostPort.substring(colon + 1));
            return port >= 1 && port <= 65535 ? port : -1;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** Nodes the job spans (1 for a single-node job). */
    public int nodes() {
        return Math.max(1, hosts.size());
    }

    /** Where rank 0 serves the rendezvous: {@code rendezvous}, or the first host at the default port. */
    public java.net.InetSocketAddress rendezvousAddress() {
        if (hosts.size() < 2) {
            throw new IllegalStateException("a single-node job has no rendezvous");
        }
        String hp = rendezvous.isEmpty() ? hosts.get(0) + ":" + DEFAULT_RENDEZVOUS_PORT : rendezvous;
        int colon = hp.lastIndexOf(':');
        return java.net.InetSocketAddress.createUnresolved(hp.substring(0, colon), Integer.parseInt(hp.substring(colon + 1)));
    }

    /** Devices that train (and, when {@code rollout_devices} is 0, also roll out). */
    public int trainDevices() {
        return devices - rolloutDevices;
    }

    static PlacementSpec read(Section s) {
        ComputeBackend backend = s.choice("backend", ComputeBackend.CPU);
        int devices = s.integer("devices", 1);
        int rollout = s.integer("rollout_devices", 0);
        int ep = s.integer("expert_parallel", 1);
        int tp = s.integer("tensor_parallel", 1);
        List<String> hosts = s.strings("hosts", List.of());
        String rendezvous = s.string("rendezvous", "");
        return s.build(() -> new PlacementSpec(backend, devices, rollout, ep, tp, hosts, rendezvous));
    }
}
