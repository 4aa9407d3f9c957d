"""Networks: ResNet backbones and heads, MoCo, hypercolumns, the projector, the keypoint regressor, DVE nets, parts."""
