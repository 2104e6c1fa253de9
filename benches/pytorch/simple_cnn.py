"""The book's SimpleConvNet protocol in PyTorch on the CPU, for `cargo xtask bench --cnn`.

conv 30@5x5 -> ReLU -> max-pool 2x2 -> affine 100 -> ReLU -> affine 10; weights N(0,1)*0.01,
biases 0; Adam lr 0.001; batches of 100 drawn at random with replacement; 20 epochs of 600
iterations; 1,000 training and 1,000 test images evaluated per epoch, the whole test set at
the end (the book's train_convnet.py). Reads the four MNIST .gz files from $MANABI_DATA and
prints one line: `final test acc A; iterations N; seconds S` (S is the whole process).
"""
import gzip
import os
import struct
import sys
import time

START = time.perf_counter()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = struct.unpack(">" + "I" * (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    body = data[4 + 4 * len(dims):]
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def main():
    d = os.environ["MANABI_DATA"]
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
    x_train = idx(f"{d}/train-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)
    t_train = idx(f"{d}/train-labels-idx1-ubyte.gz").long()
    x_test = idx(f"{d}/t10k-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)
    t_test = idx(f"{d}/t10k-labels-idx1-ubyte.gz").long()
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, 0.01)
                m.bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    per_epoch = x_train.shape[0] // 100

    def accuracy(x, t):
        with torch.no_grad():
            correct = 0
            for i in range(0, x.shape[0], 1000):
                correct += (net(x[i:i + 1000]).argmax(1) == t[i:i + 1000]).sum().item()
        return correct / x.shape[0]

    for i in range(iters):
        batch = torch.randint(0, x_train.shape[0], (100,))
        loss = F.cross_entropy(net(x_train[batch]), t_train[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i % per_epoch == 0:
            accuracy(x_train[:1000], t_train[:1000])
            accuracy(x_test[:1000], t_test[:1000])
    acc = accuracy(x_test, t_test)
    print(f"final test acc {acc:.4f}; iterations {iters}; seconds {time.perf_counter() - START:.2f}; threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
