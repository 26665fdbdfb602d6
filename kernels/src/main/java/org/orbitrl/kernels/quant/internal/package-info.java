/**
 * Vector kernels behind {@link org.orbitrl.kernels.quant.FusedQuantMatmul}. Not API: signatures
 * change with the kernels; call {@code FusedQuantMatmul} instead.
 */
package org.orbitrl.kernels.quant.internal;
