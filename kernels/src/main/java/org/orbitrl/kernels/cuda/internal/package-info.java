/**
 * Implementation details of the CUDA backend: pointer wrappers, the kernel compiler and cache,
 * launch marshalling. Not API: may change without notice.
 */
package org.orbitrl.kernels.cuda.internal;
