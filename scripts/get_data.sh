#!/usr/bin/env bash
# Install the real dataset the demo and the real-data tests use: Debian's dataset-fashion-mnist
# (Fashion-MNIST, 60k/10k images, in /usr/share/datasets/fashion-mnist). Needs no download from
# anywhere but the Debian mirror. Where apt-get cannot be used, say how to get the files instead.
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST: found in $DIR"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"
  $SUDO apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST: installed in $DIR"
else
  echo "Fashion-MNIST is not installed and apt-get is not usable here."
  echo "  Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist"
  echo "  elsewhere: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
  echo "  t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (github.com/zalandoresearch/fashion-mnist)"
  echo "  in a folder and pass --data FOLDER. Tests that need the real images are skipped."
fi
exit 0
