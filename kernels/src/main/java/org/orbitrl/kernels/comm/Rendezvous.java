package org.orbitrl.kernels.comm;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;

/**
 * The TCP rendezvous that lets the daemons of one multi-node job agree on a communicator: rank 0
 * {@link #serve serves} a payload (the 128-byte {@code ncclUniqueId}) at the job's
 * {@code host:port}; every other rank {@link #join joins}, says which job, rank and world size
 * it belongs to, and receives the payload. The server checks each hello (same job, same world
 * size, rank in range and not taken) and answers a refusal with the reason, so a misconfigured
 * daemon fails with a message instead of hanging NCCL.
 *
 * <p>Wire format (big-endian, one connection per joining rank): the client sends magic
 * {@code 0x4F524256} ("ORBV"), version {@code 1} (int), job name (UTF), rank (int), world size
 * (int); the server answers status byte 0 followed by the payload length (int) and bytes, or
 * status 1 followed by the refusal message (UTF).
 */
public final class Rendezvous {
    static final int MAGIC = 0x4F524256;
    static final int VERSION = 1;

    private Rendezvous() {
    }

    /**
     * Rank 0: listens on {@code bind}, hands {@code payload} to each of the other {@code world − 1}
     * ranks of {@code job}, and returns once all have it. Throws if they have not all joined
     * within {@code timeout}, naming the ranks still missing.
     */
    public static void serve(InetSocketAddress bind, String job, int world, byte[] payload, Duration timeout)
            throws IOException {
        try (ServerSocket server = new ServerSocket()) {
            server.setReuseAddress(true);
            server.bind(bind);
            serve(server, job, world, payload, timeout);
        }
    }

    /** As {@link #serve(InetSocketAddress, String, int, byte[], Duration)} on a socket already bound. */
    public static void serve(ServerSocket server, String job, int world, byte[] payload, Duration timeout)
            throws IOException {
        if (world < 1) {
            throw new IllegalArgumentException("rendezvous for job " + job + ": world size must be >= 1, got " + world);
        }
        BitSet joined = new BitSet(world);
        joined.set(0);
        long deadline = System.nanoTime() + timeout.toNanos();
        while (joined.cardinality() < world) {
            long left = (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) {
                throw missing(job, world, joined, server, timeout);
            }
            server.setSoTimeout((int) Math.min(Integer.MAX_VALUE, left));
            Socket s;
            try {
                s = server.accept();
            } catch (SocketTimeoutException e) {
                throw missing(job, world, joined, server, timeout);
            }
            try (s) {
                s.setSoTimeout(10_000);
                DataInputStream in = new DataInputStream(s.getInputStream());
                DataOutputStream out = new DataOutputStream(s.getOutputStream());
                String refusal;
                int rank = -1;
                try {
                    int magic = in.readInt();
                    int version = in.readInt();
                    if (magic != MAGIC || version != VERSION) {
                        refusal = "not an Orbit rendezvous hello (magic " + Integer.toHexString(magic) + ", version "
                                + version + ")";
                    } else {
                        String theirJob = in.readUTF();
                        rank = in.readInt();
                        int theirWorld = in.readInt();
                        refusal = check(job, world, joined, theirJob, rank, theirWorld);
                    }
                } catch (IOException e) {
                    continue; // a half-open or foreign connection: ignore it, keep serving
                }
                if (refusal == null) {
                    out.writeByte(0);
                    out.writeInt(payload.length);
                    out.write(payload);
                    out.flush();
                    joined.set(rank);
                } else {
                    out.writeByte(1);
                    out.writeUTF(refusal);
                    out.flush();
                }
            }
        }
    }

    private static String check(String job, int world, BitSet joined, String theirJob, int rank, int theirWorld) {
        if (!job.equals(theirJob)) {
            return "this rendezvous serves job '" + job + "', not '" + theirJob + "'";
        }
        if (theirWorld != world) {
            return "job '" + job + "' has world size " + world + ", the joining daemon says " + theirWorld;
        }
        if (rank <= 0 || rank >= world) {
            return "rank " + rank + " is outside 1.." + (world - 1) + " (rank 0 serves)";
        }
        if (joined.get(rank)) {
            return "rank " + rank + " of job '" + job + "' has already joined";
        }
        return null;
    }

    private static IOException missing(String job, int world, BitSet joined, ServerSocket server, Duration timeout) {
        int[] missing = new int[world - joined.cardinality()];
        int k = 0;
        for (int r = joined.nextClearBit(0); r < world; r = joined.nextClearBit(r + 1)) {
            missing[k++] = r;
        }
        return new IOException("rendezvous for job '" + job + "' at " + server.getLocalSocketAddress() + ": ranks "
                + Arrays.toString(missing) + " of " + world + " did not join within " + timeout);
    }

    /**
     * Rank {@code rank} (≥ 1): connects to rank 0's rendezvous (retrying while it is not up yet, until
     * {@code timeout}), and returns the payload. Throws with the server's reason if it refuses.
     */
    public static byte[] join(InetSocketAddress server, String job, int rank, int world, Duration timeout)
            throws IOException {
        long deadline = System.nanoTime() + timeout.toNanos();
        IOException last = null;
        while (System.nanoTime() < deadline) {
            try (Socket s = new Socket()) {
                s.connect(server, (int) Math.max(1, Math.min(5_000, (deadline - System.nanoTime()) / 1_000_000)));
                s.setSoTimeout((int) Math.max(1, (deadline - System.nanoTime()) / 1_000_000));
                DataOutputStream out = new DataOutputStream(s.getOutputStream());
                out.writeInt(MAGIC);
                out.writeInt(VERSION);
                out.writeUTF(job);
                out.writeInt(rank);
                out.writeInt(world);
                out.flush();
                DataInputStream in = new DataInputStream(s.getInputStream());
                int status = in.readUnsignedByte();
                if (status != 0) {
                    throw new RendezvousRefusedException("rendezvous at " + server + " refused rank " + rank + " of job '"
                            + job + "': " + in.readUTF());
                }
                int n = in.readInt();
                if (n < 0 || n > 1 << 20) {
                    throw new IOException("rendezvous at " + server + " announced a payload of " + n + " bytes");
                }
                return in.readNBytes(n);
            } catch (RendezvousRefusedException e) {
                throw e;
            } catch (IOException e) {
                last = e;
                try {
                    Thread.sleep(100);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted joining the rendezvous at " + server, ie);
                }
            }
        }
        throw new IOException("rank " + rank + " of job '" + job + "' could not reach the rendezvous at " + server
                + " within " + timeout + (last == null ? "" : ": " + last.getMessage()), last);
    }

    /** The server answered, and said no: retrying would not help. */
    public static final class RendezvousRefusedException extends IOException {
        public RendezvousRefusedException(String message) {
            super(message);
        }
    }
}
