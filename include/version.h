/* version.h -- the release of this build, printed by `gridpointsd --version` and exported as
 * gridpoints_build_info{version=...} at /metrics. */
#ifndef GP_VERSION_H
#define GP_VERSION_H

#define GRIDPOINTS_VERSION "0.1.0"

#endif
