"""What the generator reads besides the frames: optical flow and semantic labels.

    clips.py      ClipInputs and the clip length (CLIP_LEN, INPUT_FRAMES)
    base.py       the provider interfaces (coarse / expand at each exact cache point)
    motion.py     flow: OpenCV DIS and Farneback, FlowNet2 with the reference's x255 feeding
    labels.py     labels: DeepLabv3 logits, a foreground map, none
    registry.py   providers by name
    extractor.py  FeatureExtractor: the providers and the one assembly of ClipInputs
    store.py      FeatureStore: each frame's labels and each pair's flow, computed once

Import the modules themselves (the package imports nothing, so the clip length can be read
without loading any network).
"""
