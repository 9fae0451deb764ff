"""Training of one network or a stack of networks on device-resident data; knows nothing of lotteries."""
