"""End-to-end demos (``veil demo``).

- :func:`veil.demos.linear.run_linear_demo`: a linear MNIST classifier evaluated on
  secret shares between two parties and a dealer over TCP on localhost.
"""
