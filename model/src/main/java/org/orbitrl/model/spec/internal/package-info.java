/** Parsing helpers behind {@link org.orbitrl.model.spec.ConfigLoader}; not API. */
package org.orbitrl.model.spec.internal;
