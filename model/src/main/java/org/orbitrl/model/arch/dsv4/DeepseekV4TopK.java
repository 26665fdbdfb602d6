package org.orbitrl.model.arch.dsv4;

/**
 * Top-k selection with the tie-breaking of the reference: PyTorch's CPU {@code topk} (for
 * k·64 > n) partitions (score, index) pairs with {@code std::nth_element} at k-1 under
 * "greater score", and the k chosen are the first k after it. Equal scores are common here (the
 * indexer's ReLU makes whole rows of exact zeros), so which of the tied entries survive is
 * decided by the partition order; this reproduces libstdc++'s introselect (median-of-three
 * pivot, unguarded Hoare partition, insertion sort below four elements) step for step. The
 * indexer gives it a query's closed entries only ({@link DeepseekV4Indexer}).
 */
final class DeepseekV4TopK {
    private DeepseekV4TopK() {
    }

    /** The indices of the k largest of {@code score} (as a set, in partition order). */
    static int[] select(float[] score, int k) {
        int n = score.length;
        if (k <= 0) {
            return new int[0];
        }
        float[] v = score.clone();
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) {
            idx[i] = i;
        }
        if (k < n) {
            introselect(v, idx, 0, k - 1, n, 2 * (31 - Integer.numberOfLeadingZeros(n)));
        }
        int[] out = new int[k];
        System.arraycopy(idx, 0, out, 0, k);
        return out;
    }

    private static boolean comp(float[] v, int a, int b) {
        return v[a] > v[b];
    }

    private static void swap(float[] v, int[] idx, int a, int b) {
        float tv = v[a];
        v[a] = v[b];
        v[b] = tv;
        int ti = idx[a];
        idx[a] = idx[b];
        idx[b] = ti;
    }

    private static void introselect(float[] v, int[] idx, int first, int nth, int last, int depth) {
        while (last - first > 3) {
            if (depth == 0) {
                heapSelectFallback(v, idx, first, nth, last);
                return;
            }
            depth--;
            int cut = partitionPivot(v, idx, first, last);
            if (cut <= nth) {
                first = cut;
            } else {
                last = cut;
            }
        }
        insertionSort(v, idx, first, last);
    }

    private static int partitionPivot(float[] v, int[] idx, int first, int last) {
        int mid = first + (last - first) / 2;
        moveMedianToFirst(v, idx, first, first + 1, mid, last - 1);
        return unguardedPartition(v, idx, first + 1, last, first);
    }

    private static void moveMedianToFirst(float[] v, int[] idx, int result, int a, int b, int c) {
        if (comp(v, a, b)) {
            if (comp(v, b, c)) {
                swap(v, idx, result, b);
            } else if (comp(v, a, c)) {
                swap(v, idx, result, c);
            } else {
                swap(v, idx, result, a);
            }
        } else if (comp(v, a, c)) {
            swap(v, idx, result, a);
        } else if (comp(v, b, c)) {
            swap(v, idx, result, c);
        } else {
            swap(v, idx, result, b);
        }
    }

    private static int unguardedPartition(float[] v, int[] idx, int first, int last, int pivot) {
        while (true) {
            while (comp(v, first, pivot)) {
                first++;
            }
            last--;
            while (comp(v, pivot, last)) {
                last--;
            }
            if (!(first < last)) {
                return first;
            }
            swap(v, idx, first, last);
            first++;
        }
    }

    private static void insertionSort(float[] v, int[] idx, int first, int last) {
        if (first == last) {
            return;
        }
        for (int i = first + 1; i < last; i++) {
            float val = v[i];
            int vi = idx[i];
            if (val > v[first]) {
                System.arraycopy(v, first, v, first + 1, i - first);
                System.arraycopy(idx, first, idx, first + 1, i - first);
                v[first] = val;
                idx[first] = vi;
            } else {
                int j = i;
                while (val > v[j - 1]) {
                    v[j] = v[j - 1];
                    idx[j] = idx[j - 1];
                    j--;
                }
                v[j] = val;
                idx[j] = vi;
            }
        }
    }

    /** Depth exhausted (not reached for the sizes here): a plain stable selection by score. */
    private static void heapSelectFallback(float[] v, int[] idx, int first, int nth, int last) {
        for (int i = first; i <= nth; i++) {
            int best = i;
            for (int j = i + 1; j < last; j++) {
                if (v[j] > v[best]) {
                    best = j;
                }
            }
            swap(v, idx, i, best);
        }
    }
}
