"""Multi-input CNN (one convolutional branch per DCE-MRI phase), training-time augmentation and Grad-CAM.

Everything here uses backend-agnostic Keras 3 (``keras.layers``, ``keras.ops``) so the same code runs on the
TensorFlow backend and on JAX; only the gradient helper in ``gradcam`` dispatches per backend.
"""
