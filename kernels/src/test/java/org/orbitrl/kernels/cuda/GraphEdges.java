package org.orbitrl.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

import static org.bytedeco.cuda.global.cudart.CU_GRAPH_DEPENDENCY_TYPE_DEFAULT;
import static org.bytedeco.cuda.global.cudart.CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC;

/**
 * The edges of a captured graph by dependency type, read through the driver's
 * {@code cuGraphGetEdges_v2} (called through the FFM API: the JavaCPP binding passes the node
 * arrays as single pointers). {@code CUgraphEdgeData} is 8 bytes: from_port, to_port, type, 5 reserved.
 */
final class GraphEdges {
    /** Edges of each kind: full (default) dependencies and programmatic ones. */
    record Counts(long total, long full, long programmatic) {
    }

    /** The driver's entry point, or null where the driver has none (then {@link #of} returns null). */
    private static final MethodHandle GET_EDGES = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global())
            .find("cuGraphGetEdges_v2")
            .map(f -> Linker.nativeLinker().downcallHandle(f, FunctionDescriptor.of(ValueLayout.JAVA_INT,
                    ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS)))
            .orElse(null);

    private GraphEdges() {
    }

    /** The edges of {@code g}, or null where the driver cannot report edge types (older than CUDA 12.3). */
    static Counts of(CudaGraph g) {
        if (GET_EDGES == null) {
            return null;
        }
        MemorySegment graph = MemorySegment.ofAddress(g.graph().address());
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(ValueLayout.JAVA_LONG);
            check(call(graph, MemorySegment.NULL, MemorySegment.NULL, MemorySegment.NULL, n), "edge count");
            long count = n.get(ValueLayout.JAVA_LONG, 0);
            if (count == 0) {
                return new Counts(0, 0, 0);
            }
            MemorySegment from = a.allocate(8 * count, 8);
            MemorySegment to = a.allocate(8 * count, 8);
            MemorySegment data = a.allocate(8 * count, 8);
            check(call(graph, from, to, data, n), count + " edges");
            long got = n.get(ValueLayout.JAVA_LONG, 0);
            long full = 0;
            long programmatic = 0;
            for (long i = 0; i < got; i++) {
                int type = data.get(ValueLayout.JAVA_BYTE, 8 * i + 2);
                if (type == CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC) {
                    programmatic++;
                } else if (type == CU_GRAPH_DEPENDENCY_TYPE_DEFAULT) {
                    full++;
                }
            }
            return new Counts(got, full, programmatic);
        }
    }

    private static int call(MemorySegment graph, MemorySegment from, MemorySegment to, MemorySegment data, MemorySegment n) {
        try {
            return (int) GET_EDGES.invokeExact(graph, from, to, data, n);
        } catch (Throwable t) {
            throw new IllegalStateException("cuGraphGetEdges_v2 could not be called", t);
        }
    }

    private static void check(int err, String what) {
        CudaCheck.driver(err, "cuGraphGetEdges_v2 (" + what + ")");
    }
}
