#!/usr/bin/env bash
# Installs what the MPI crate (chainrule-mpi) and its tests need, if it is not there yet:
# OpenMPI (libopenmpi-dev, openmpi-bin), and libclang-dev and pkgconf for the bindings' build.
# Debian or Ubuntu; as root, or through sudo. Does nothing when all of it is installed.
set -euo pipefail

if command -v mpirun > /dev/null && pkg-config --exists ompi 2> /dev/null \
    && ls /usr/lib/llvm-*/lib/libclang*.so* > /dev/null 2>&1; then
    exit 0
fi
packages=(libopenmpi-dev openmpi-bin libclang-dev pkgconf)
if ! command -v apt-get > /dev/null; then
    echo "tests/mpi/install.sh: no apt-get here; install OpenMPI with its headers, mpirun," \
        "libclang and pkg-config by hand (Debian's names: ${packages[*]})" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
fi
echo "installing ${packages[*]} (about 2 minutes)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" > /dev/null
