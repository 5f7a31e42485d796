"""Reading what users have (HDF5 data, image files and folders, Keras models) and writing outputs atomically."""
