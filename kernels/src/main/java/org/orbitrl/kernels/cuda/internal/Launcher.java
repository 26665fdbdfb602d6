package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUlaunchAttribute;
import org.bytedeco.cuda.cudart.CUlaunchConfig;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

import static org.bytedeco.cuda.global.cudart.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
import static org.bytedeco.cuda.global.cudart.CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
import static org.bytedeco.cuda.global.cudart.CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT;
import static org.bytedeco.cuda.global.cudart.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
import static org.bytedeco.cuda.global.cudart.cuLaunchKernel;
import static org.bytedeco.cuda.global.cudart.cuLaunchKernelEx;

/**
 * Marshals kernel arguments and launches. Each thread has one native block of argument slots and
 * the {@code void*[]} pointing at them, and one launch configuration with its attribute, allocated
 * once and kept for the life of the thread (the driver copies the values during the call, so the
 * next launch may overwrite them; no argument memory is ever left to a garbage collector while the
 * driver reads it).
 *
 * <p>A kernel that waits for its predecessor ({@link Kernel#waitsForPredecessor}) is launched, while
 * its library's dependent launches are on, through {@code cuLaunchKernelEx} with programmatic stream
 * serialization allowed: its blocks may start once every block of the kernel before it on the stream
 * has started and called {@code griddepcontrol.launch_dependents} (or ended), and its first statement
 * waits until that kernel has completed. A cooperative launch ({@link #launchCooperative}) goes through
 * {@code cuLaunchKernelEx} with the cooperative attribute, a launch of thread block clusters ({@link #launchClusters})
 * with the cluster dimension (and programmatic stream serialization only where {@link #CLUSTER_DEPENDENT_PROPERTY} asks
 * for it too). Every other launch goes through {@code cuLaunchKernel}.
 *
 * <p>Arguments: {@link Long} (a 64-bit value or device address), {@link Integer} (int),
 * {@link Float} (float), {@link Tensor} (the device address of its first element) and
 * {@code null} (a null pointer).
 */
public final class Launcher {
    private static final int MAX_ARGS = 64;

    /** How a launch is issued. */
    enum Path {
        /** {@code cuLaunchKernel}: the kernel starts after the work before it on the stream has completed. */
        PLAIN,
        /** {@code cuLaunchKernelEx} with programmatic stream serialization: may start while its predecessor runs. */
        DEPENDENT
    }

    /** One thread's launch state. */
    private static final class Slots {
        final MemorySegment values;       // [MAX_ARGS] 8-byte argument values
        final MemorySegment table;        // [MAX_ARGS] pointers into values
        final PointerArray pointers;      // table as JavaCPP sees it
        final CUlaunchConfig config;      // the dependent launch's configuration, attrs -> attribute
        final CUlaunchAttribute attribute; // [2]: programmatic stream serialization allowed, then a carveout (CARVEOUT_PROPERTY)
        final CUlaunchAttribute carveout;  // attribute[1]
        final CUlaunchConfig cooperativeConfig;      // a cooperative launch's configuration
        final CUlaunchAttribute cooperativeAttribute; // cooperative: every block resident at once
        final CUlaunchConfig clusterConfig;        // a launch of clusters: attrs -> clusterAttributes
        final CUlaunchAttribute clusterAttributes; // [3]: the cluster dimension, then a carveout and programmatic stream
                                                   // serialization where asked (filled at each launch)
        final CUlaunchAttribute clusterDim;        // clusterAttributes[0]
        final CUlaunchAttribute[] clusterRest;     // clusterAttributes[1], [2]
        long dependentLaunches;           // launches issued on the dependent path by this thread
        long launches;                    // every launch this thread issued (omitted ones not)

        Slots() {
            values = Arena.ofAuto().allocate(8L * MAX_ARGS, 16);
            table = Arena.ofAuto().allocate(8L * MAX_ARGS, 16);
            for (int i = 0; i < MAX_ARGS; i++) {
                table.setAtIndex(ValueLayout.JAVA_LONG, i, values.address() + 8L * i);
            }
            pointers = new PointerArray(table.address());
            attribute = new CUlaunchAttribute(2);
            Pointer.memset(attribute, 0, 2 * attribute.sizeof());
            attribute.id(CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
            attribute.value().programmaticStreamSerializationAllowed(1);
            carveout = attribute.getPointer(1);
            carveout.id(CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT);
            config = new CUlaunchConfig();
            Pointer.memset(config, 0, config.sizeof());
            config.attrs(attribute);
            config.numAttrs(1);
            config.gridDimZ(1).blockDimY(1).blockDimZ(1);
            cooperativeAttribute = new CUlaunchAttribute();
            Pointer.memset(cooperativeAttribute, 0, cooperativeAttribute.sizeof());
            cooperativeAttribute.id(CU_LAUNCH_ATTRIBUTE_COOPERATIVE);
            cooperativeAttribute.value().cooperative(1);
            cooperativeConfig = new CUlaunchConfig();
            Pointer.memset(cooperativeConfig, 0, cooperativeConfig.sizeof());
            cooperativeConfig.attrs(cooperativeAttribute);
            cooperativeConfig.numAttrs(1);
            cooperativeConfig.gridDimY(1).gridDimZ(1).blockDimY(1).blockDimZ(1);
            clusterAttributes = new CUlaunchAttribute(3);
            Pointer.memset(clusterAttributes, 0, 3 * clusterAttributes.sizeof());
            clusterDim = clusterAttributes.getPointer(0);
            clusterDim.id(CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
            clusterDim.value().clusterDim_x(1).clusterDim_y(1).clusterDim_z(1);
            clusterRest = new CUlaunchAttribute[]{clusterAttributes.getPointer(1), clusterAttributes.getPointer(2)};
            clusterConfig = new CUlaunchConfig();
            Pointer.memset(clusterConfig, 0, clusterConfig.sizeof());
            clusterConfig.attrs(clusterAttributes);
            clusterConfig.gridDimY(1).gridDimZ(1).blockDimY(1).blockDimZ(1);
        }
    }

    private static final ThreadLocal<Slots> SLOTS = ThreadLocal.withInitial(Slots::new);

    private Launcher() {
    }

    /** The path a launch of {@code kernel} takes now. */
    static Path path(Kernel kernel) {
        return kernel.dependentLaunch() ? Path.DEPENDENT : Path.PLAIN;
    }

    /**
     * A timing aid, never for numbers: {@code -Dorbit.cuda.omitKernels=REGEX} (read at each launch) leaves out every launch
     * whose kernel name contains a match, and {@link Cublas}'s products when it matches {@code cublas}. Their outputs keep
     * what they held, so a captured decode step timed with and without a kernel gives that kernel's share of the step as
     * it runs in the graph (its time and the gap before the next launch), which a profiler's serialized launches do not.
     */
    public static final String OMIT_PROPERTY = "orbit.cuda.omitKernels";

    private record Omit(String regex, Pattern pattern) {
    }

    private static volatile Omit omit = new Omit("", null);

    /** Whether launches of kernel {@code name} are left out now ({@link #OMIT_PROPERTY}). */
    public static boolean omitted(String name) {
        String regex = System.getProperty(OMIT_PROPERTY, "");
        if (regex.isEmpty()) {
            return false;
        }
        Omit o = omit;
        if (!o.regex.equals(regex)) {
            try {
                o = new Omit(regex, Pattern.compile(regex));
            } catch (PatternSyntaxException e) {
                throw new IllegalArgumentException("-D" + OMIT_PROPERTY + "=" + regex + ": not a regular expression: " + e.getDescription(), e);
            }
            omit = o;
        }
        return o.pattern.matcher(name).find();
    }

    /**
     * Work a launch left to the launches after it on the same thread (a router launch that wrote its logits and left the
     * choice of experts to the launch that reads them first): the launch that takes it ({@link #take}) does it itself;
     * any other launch of the thread ({@link #launch}, {@link #launchCooperative}, {@link #launchClusters}) has it done
     * first ({@link #settleDeferred}), as do the thread's host reads and syncs that call {@link #settleDeferred}.
     */
    public interface Deferred {
        /** Does the work (its own launches, on the stream of the launch that left it). */
        void settle();
    }

    /** Work a launch of each thread left to the launches after it. */
    private static final ThreadLocal<Deferred> DEFERRED = new ThreadLocal<>();

    /** Leaves {@code d} to the thread's next launches; work left before it and not yet done is done first. */
    public static void defer(Deferred d) {
        settleDeferred();
        DEFERRED.set(d);
    }

    /** The work left to the thread's next launch (null: none), which stays left. */
    public static Deferred deferred() {
        return DEFERRED.get();
    }

    /** Takes {@code d}, left to the thread's next launch, so that no launch does it: the caller's launch does. */
    public static void take(Deferred d) {
        Deferred left = DEFERRED.get();
        if (left != d) {
            throw new IllegalStateException("take: " + d + " is not the work left to this thread's next launch (" + left + ")");
        }
        DEFERRED.remove();
    }

    /** Does the work left to the thread's next launch, if any, now. */
    public static void settleDeferred() {
        Deferred d = DEFERRED.get();
        if (d != null) {
            DEFERRED.remove();
            d.settle();
        }
    }

    /** Launches issued on the dependent path by the calling thread so far. */
    public static long dependentLaunches() {
        return SLOTS.get().dependentLaunches;
    }

    /** Kernel launches (of any kind, on any stream) issued through this class by the calling thread so far. */
    public static long launches() {
        return SLOTS.get().launches;
    }

    public static void launch(Kernel kernel, CUstream_st stream, long gridX, int gridY, int blockX, int sharedBytes, Object... args) {
        if (gridX <= 0 || gridX > Integer.MAX_VALUE || gridY <= 0 || args.length > MAX_ARGS) {
            throw new IllegalArgumentException("kernel " + kernel + ": bad grid " + gridX + "x" + gridY + " or " + args.length + " arguments");
        }
        settleDeferred();
        if (omitted(kernel.name())) {
            return;
        }
        kernel.allowShared(sharedBytes);
        Slots slots = SLOTS.get();
        marshal(kernel, slots.values, args);
        if (path(kernel) == Path.DEPENDENT) {
            CUlaunchConfig config = slots.config;
            int percent = carveout(kernel.name());
            slots.carveout.value().sharedMemCarveout(percent);
            config.numAttrs(percent < 0 ? 1 : 2);
            config.gridDimX((int) gridX).gridDimY(gridY).blockDimX(blockX).sharedMemBytes(sharedBytes).hStream(stream);
            int err = cuLaunchKernelEx(config, kernel.function(), slots.pointers, (PointerPointer<?>) null);
            if (err != 0) {
                CudaCheck.driver(err, "cuLaunchKernelEx " + kernel + " (dependent launch: programmatic stream serialization)",
                        "grid " + gridX + "x" + gridY, "block " + blockX, "shared " + sharedBytes + " B", args.length + " arguments");
            }
            slots.dependentLaunches++;
            slots.launches++;
            return;
        }
        int err = cuLaunchKernel(kernel.function(), (int) gridX, gridY, 1, blockX, 1, 1, sharedBytes, stream,
                slots.pointers, (PointerArray) null);
        if (err != 0) {
            CudaCheck.driver(err, "cuLaunchKernel " + kernel, "grid " + gridX + "x" + gridY, "block " + blockX,
                    "shared " + sharedBytes + " B", args.length + " arguments");
        }
        slots.launches++;
    }

    /**
     * {@code -Dorbit.cuda.carveout=PERCENT:REGEX} (read at each launch; unset by default): a dependent launch of a kernel
     * whose name matches REGEX asks for PERCENT (0 to 100) of the SM's unified L1 and shared memory as shared memory (the
     * launch's preferred carveout), so that the kernels of a decode step can agree on one configuration: an SM changes its
     * configuration only once its blocks have left, so that a dependent whose blocks need more shared memory than the
     * configuration of the launch before holds cannot start beside that launch's blocks. A measuring aid.
     */
    public static final String CARVEOUT_PROPERTY = "orbit.cuda.carveout";

    /** The last {@link #CARVEOUT_PROPERTY} value read, parsed. */
    private record Carveout(String value, int percent, Pattern kernels) {
    }

    private static volatile Carveout carveout = new Carveout("", -1, null);

    /** The carveout {@link #CARVEOUT_PROPERTY} asks of a launch of {@code name}, or -1 for none. */
    static int carveout(String name) {
        String v = System.getProperty(CARVEOUT_PROPERTY, "");
        if (v.isEmpty()) {
            return -1;
        }
        Carveout c = carveout;
        if (!c.value.equals(v)) {
            int colon = v.indexOf(':');
            int percent = -1;
            try {
                percent = colon > 0 ? Integer.parseInt(v.substring(0, colon).trim()) : -1;
            } catch (NumberFormatException e) {
                // reported below
            }
            if (percent < 0 || percent > 100) {
                throw new IllegalArgumentException("-D" + CARVEOUT_PROPERTY + "=" + v + ": expected PERCENT:REGEX, PERCENT 0 to 100");
            }
            try {
                c = new Carveout(v, percent, Pattern.compile(v.substring(colon + 1)));
            } catch (PatternSyntaxException e) {
                throw new IllegalArgumentException("-D" + CARVEOUT_PROPERTY + "=" + v + ": not a regular expression after the colon: "
                        + e.getDescription(), e);
            }
            carveout = c;
        }
        return c.kernels.matcher(name).matches() ? c.percent : -1;
    }

    /**
     * A cooperative launch of a 1-D grid: the driver starts it only with every block resident at once
     * (more blocks than the device holds fail with {@code CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE}), so
     * its blocks may wait for each other. A stream capture records it as a cooperative kernel node.
     */
    public static void launchCooperative(Kernel kernel, CUstream_st stream, int gridX, int blockX, int sharedBytes, Object... args) {
        if (gridX <= 0 || args.length > MAX_ARGS) {
            throw new IllegalArgumentException("kernel " + kernel + ": bad grid " + gridX + " or " + args.length + " arguments");
        }
        settleDeferred();
        kernel.allowShared(sharedBytes);
        Slots slots = SLOTS.get();
        marshal(kernel, slots.values, args);
        CUlaunchConfig config = slots.cooperativeConfig;
        config.gridDimX(gridX).blockDimX(blockX).sharedMemBytes(sharedBytes).hStream(stream);
        int err = cuLaunchKernelEx(config, kernel.function(), slots.pointers, (PointerPointer<?>) null);
        if (err != 0) {
            CudaCheck.driver(err, "cuLaunchKernelEx " + kernel + " (cooperative)", "grid " + gridX, "block " + blockX,
                    "shared " + sharedBytes + " B", args.length + " arguments");
        }
        slots.launches++;
    }

    /**
     * {@code -Dorbit.cuda.pdlClusters=on|off} (read at each launch; off by default): whether a launch of clusters takes
     * programmatic stream serialization where its kernel waits for its predecessor and dependent launches are on.
     */
    public static final String CLUSTER_DEPENDENT_PROPERTY = "orbit.cuda.pdlClusters";

    /**
     * A launch of a 1-D grid in thread block clusters of {@code clusterX} consecutive blocks (sm_90 and later; up to 8, or
     * 16 where the kernel is allowed sizes past the portable 8, which this asks of the driver), which the device places
     * together so that their blocks may read each other's shared memory and wait for each other. Dependent as {@link
     * #launch} only where {@link #CLUSTER_DEPENDENT_PROPERTY} asks for it too; captured into a graph as a kernel node with
     * its cluster dimension.
     */
    public static void launchClusters(Kernel kernel, CUstream_st stream, long gridX, int clusterX, int blockX, int sharedBytes,
                                      Object... args) {
        if (gridX <= 0 || gridX > Integer.MAX_VALUE || clusterX <= 0 || clusterX > 16 || gridX % clusterX != 0 || args.length > MAX_ARGS) {
            throw new IllegalArgumentException("kernel " + kernel + ": bad grid " + gridX + " in clusters of " + clusterX + " or "
                    + args.length + " arguments");
        }
        settleDeferred();
        if (omitted(kernel.name())) {
            return;
        }
        kernel.allowShared(sharedBytes);
        kernel.allowClusterSize(clusterX);
        Slots slots = SLOTS.get();
        marshal(kernel, slots.values, args);
        boolean dependent = path(kernel) == Path.DEPENDENT && "on".equals(System.getProperty(CLUSTER_DEPENDENT_PROPERTY, "off"));
        slots.clusterDim.value().clusterDim_x(clusterX);
        int attrs = 1;
        int percent = carveout(kernel.name());
        if (percent >= 0) {
            CUlaunchAttribute a = slots.clusterRest[attrs++ - 1];
            a.id(CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT);
            a.value().sharedMemCarveout(percent);
        }
        if (dependent) {
            CUlaunchAttribute a = slots.clusterRest[attrs++ - 1];
            a.id(CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
            a.value().programmaticStreamSerializationAllowed(1);
        }
        CUlaunchConfig config = slots.clusterConfig;
        config.numAttrs(attrs);
        config.gridDimX((int) gridX).blockDimX(blockX).sharedMemBytes(sharedBytes).hStream(stream);
        int err = cuLaunchKernelEx(config, kernel.function(), slots.pointers, (PointerPointer<?>) null);
        if (err != 0) {
            CudaCheck.driver(err, "cuLaunchKernelEx " + kernel + " (clusters of " + clusterX + (dependent ? ", dependent launch)" : ")"),
                    "grid " + gridX, "block " + blockX, "shared " + sharedBytes + " B", args.length + " arguments");
        }
        if (dependent) {
            slots.dependentLaunches++;
        }
        slots.launches++;
    }

    private static void marshal(Kernel kernel, MemorySegment values, Object[] args) {
        for (int i = 0; i < args.length; i++) {
            long slot = 8L * i;
            switch (args[i]) {
                case null -> values.set(ValueLayout.JAVA_LONG, slot, 0L);
                case Long l -> values.set(ValueLayout.JAVA_LONG, slot, l);
                case Integer n -> values.set(ValueLayout.JAVA_INT, slot, n);
                case Float f -> values.set(ValueLayout.JAVA_FLOAT, slot, f);
                case Tensor t -> values.set(ValueLayout.JAVA_LONG, slot, t.segment().address() + t.byteOffset());
                default -> throw new IllegalArgumentException("kernel " + kernel + ": argument " + i
                        + " of type " + args[i].getClass().getSimpleName() + " cannot be passed");
            }
        }
    }
}
